"""scripts/lib/services.sh, which keeps the machine's services as they were while the
install adds packages: the policy-rc.d it writes refuses only what the install adds,
only while that install runs, and is gone after the install ends in any way (normally,
by a signal through its trap, or killed with kill -9, when it removes itself the first
time it is asked); a policy-rc.d of the machine's own is never touched; what the
install adds is disabled at boot. Each function runs for real, on files in a temporary
directory and with stand-ins for the service tools: nothing of this machine changes."""

import os
import signal
import subprocess
import time
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / 'scripts' / 'lib' / 'services.sh'


def _default_signals():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def bash(script: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', '-c', f'. {LIB}\n{script}'], capture_output=True,
                          text=True, timeout=30, **kw)


def ask(policy: Path, service: str) -> int:
    """What invoke-rc.d would be told: policy-rc.d SERVICE start."""
    return subprocess.run([str(policy), service, 'start'], timeout=10).returncode


def test_it_refuses_only_what_the_install_adds_while_the_install_runs(tmp_path):
    policy = tmp_path / 'policy-rc.d'
    owner = subprocess.Popen(['sleep', '60'])
    try:
        assert bash(f'kubelab_block_starts {policy} {owner.pid} nginx nginx.service'
                    ).returncode == 0
        assert ask(policy, 'nginx') == 101
        assert ask(policy, 'nginx.service') == 101
        assert ask(policy, 'ssh') == 0 and ask(policy, 'cron') == 0
        assert policy.exists()
    finally:
        owner.kill()
        owner.wait()


def test_after_a_kill_9_it_removes_itself_the_first_time_it_is_asked(tmp_path):
    policy = tmp_path / 'policy-rc.d'
    owner = subprocess.Popen(['sleep', '60'])
    bash(f'kubelab_block_starts {policy} {owner.pid} nginx')
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert ask(policy, 'nginx') == 0          # the install is gone: starts are allowed
    assert not policy.exists()


def test_a_stale_one_is_cleared_by_the_next_install_and_the_machines_own_is_kept(tmp_path):
    policy = tmp_path / 'policy-rc.d'
    owner = subprocess.Popen(['sleep', '60'])
    bash(f'kubelab_block_starts {policy} {owner.pid} nginx')
    owner.kill()
    owner.wait()
    bash(f'kubelab_clear_stale {policy}')
    assert not policy.exists()
    policy.write_text('#!/bin/sh\n# the machine\'s own\nexit 101\n')
    bash(f'kubelab_clear_stale {policy}; kubelab_unblock {policy}')
    assert policy.read_text().startswith('#!/bin/sh\n# the machine')


def test_an_install_interrupted_by_a_signal_removes_it_through_its_trap(tmp_path):
    """The install's own trap lines (scripts/install.sh), around a stand-in for apt-get
    that takes long; SIGTERM and SIGINT in the middle."""
    install = (Path(__file__).resolve().parents[2] / 'scripts' / 'install.sh').read_text()
    traps = [line.strip() for line in install.splitlines() if line.strip().startswith('trap ')]
    assert traps[:2] == ["trap 'kubelab_unblock \"$policy\"' EXIT",
                         "trap 'kubelab_unblock \"$policy\"; exit 130' INT TERM HUP"]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        policy = tmp_path / f'policy-{sig.name}'
        ready = tmp_path / f'ready-{sig.name}'
        script = (f'policy={policy}\n' + '\n'.join(traps[:2]) + '\n'
                  f'kubelab_block_starts "$policy" $$ nginx\n'
                  f'touch {ready}\nsleep 30 & wait\n')
        # Bash cannot trap a signal that was ignored when it started (as SIGINT is in a
        # job a non-interactive shell started with &): start it with the defaults.
        proc = subprocess.Popen(['bash', '-c', f'. {LIB}\n{script}'],
                                preexec_fn=_default_signals)
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert policy.exists()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        assert not policy.exists(), sig.name


def test_what_the_install_adds_is_disabled_at_boot(tmp_path):
    """With stand-ins for deb-systemd-helper and update-rc.d that record their calls."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    calls = tmp_path / 'calls'
    for tool in ('deb-systemd-helper', 'update-rc.d'):
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        path.chmod(0o755)
    initd = tmp_path / 'init.d'
    initd.mkdir()
    (initd / 'nginx').write_text('#!/bin/sh\n')
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', KUBELAB_INITD=str(initd))
    assert bash('kubelab_not_at_boot nginx', env=env).returncode == 0
    assert calls.read_text().splitlines() == ['deb-systemd-helper disable nginx.service',
                                              'update-rc.d nginx disable']
