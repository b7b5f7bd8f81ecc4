"""The machine side of a sandbox, without running one: where the lab's cgroups go on a
cgroup v1 machine and on a pure v2 one, the kubelet's CPU numbers, the command lines
that start a container and enter it, the pod's /etc/hosts and hostname, and a pod's
volumes on disk (the kubelet's atomic writer)."""

import os
import sys

import pytest

from services.container_config import RunAs, Sources
from topo import cgroups, sandbox
from topo.volumes import PodVolumes

HYBRID_MOUNTS = '''\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec shared:10 - cgroup2 cgroup2 rw
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw shared:14 - cgroup cgroup rw,pids
31 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
'''
HYBRID_CGROUP = '''\
5:pids:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/user.slice
'''
V2_MOUNTS = '25 24 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n'
V2_CGROUP = '0::/user.slice/user-1000.slice/session-2.scope\n'


def test_cgroup_v1_the_lab_goes_below_the_daemons_cgroup_in_each_hierarchy():
    dirs, v2 = cgroups.layout(HYBRID_MOUNTS, HYBRID_CGROUP)
    assert not v2
    assert dirs == {'unified': '/sys/fs/cgroup/unified/user.slice/kubelab',
                    'memory': '/sys/fs/cgroup/memory/process_api/abc/kubelab',
                    'cpu': '/sys/fs/cgroup/cpu,cpuacct/kubelab',
                    'cpuacct': '/sys/fs/cgroup/cpu,cpuacct/kubelab'}


def test_pure_cgroup_v2_the_lab_goes_at_the_top_where_controllers_delegate():
    dirs, v2 = cgroups.layout(V2_MOUNTS, V2_CGROUP)
    assert v2 and set(dirs.values()) == {'/sys/fs/cgroup/kubelab'}


@pytest.mark.parametrize('millicores, shares, weight, quota', [
    (None, 2, 1, None), (100, 102, 4, 10_000), (1000, 1024, 39, 100_000),
    (5, 5, 1, 1_000),
])
def test_the_kubelets_cpu_numbers(millicores, shares, weight, quota):
    assert cgroups.cpu_shares(millicores) == shares
    assert cgroups.cpu_weight(shares) == weight
    if quota:
        assert cgroups.cpu_quota(millicores) == quota


def spec(**kw):
    base = dict(sandbox_pid=42, layer_dir='/run/kubelab/pods/p/containers/c/layer',
                cgroup_procs=['/cg/a/cgroup.procs', '/cg/b/cgroup.procs'],
                argv=['sleep', '9'], env={'PATH': '/bin', 'A': 'b c'},
                binds=[sandbox.Bind('/run/kubelab/pods/p/etc-hosts', '/etc/hosts'),
                       sandbox.Bind('/run/kubelab/busybox-bin', '/run/kubelab/busybox-bin'),
                       sandbox.Bind('/var/vol', '/data', writable=True)],
                capabilities=('NET_RAW',), run_as=RunAs(1000, 3000, (2000, 3000)))
    base.update(kw)
    return sandbox.ContainerSpec(**base)


def _pairs(args, option):
    return [args[i + 1] for i, a in enumerate(args) if a == option]


def test_a_container_joins_its_cgroups_then_the_pods_namespaces_then_its_own():
    argv = sandbox.launch_argv(spec())
    assert argv[:7] == [sandbox.SHELL, '-c', sandbox.JOIN, 'kubelab-join', '2',
                        '/cg/a/cgroup.procs', '/cg/b/cgroup.procs']
    nsenter = argv.index(sandbox.NSENTER)
    assert argv[nsenter:nsenter + 8] == [sandbox.NSENTER, '--target', '42', '--net', '--ipc',
                                         '--uts', '--mount', '--']
    assert argv[nsenter + 8:nsenter + 13] == ['unshare', '--mount', '--propagation',
                                              'private', '--']
    bwrap = argv.index('bwrap')
    assert argv[bwrap - 1] == '/run/kubelab/pods/p/containers/c/layer'
    assert argv[bwrap + 1:bwrap + 4] == ['--bind', '/run/kubelab/pods/p/containers/c/'
                                         'layer/root', '/']


def test_bubblewrap_hides_the_machine_binds_what_is_given_and_drops_to_the_user():
    args = sandbox.bwrap_args(spec())
    assert set(_pairs(args, '--tmpfs')) >= {'/run', '/tmp', '/home', '/root'}
    read_only = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == '--ro-bind'}
    assert read_only['/run/kubelab/pods/p/etc-hosts'] == '/etc/hosts'
    assert '/var/vol' in _pairs(args, '--bind')
    # The mount point in the hidden /run is made open to every user, before the binds.
    made = args.index('/run/kubelab')
    assert args[made - 3:made] == ['--perms', '0755', '--dir']
    assert made < args.index('/run/kubelab/busybox-bin')
    for flag in ('--unshare-pid', '--as-pid-1', '--die-with-parent', '--clearenv'):
        assert flag in args
    assert _pairs(args, '--cap-add') == ['CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETPCAP',
                                         'CAP_SETUID']
    assert ['--setenv', 'A', 'b c'] == args[args.index('A') - 1:args.index('A') + 2]
    tail = args[args.index('--', args.index('--clearenv')) + 1:]
    assert tail == [sandbox.SETPRIV, '--reuid', '1000', '--regid', '3000', '--groups',
                    '2000,3000', '--bounding-set', '-all,+net_raw', '--inh-caps', '-all',
                    '--no-new-privs', '--', 'sleep', '9']
    assert '--remount-ro' in args and '/' not in _pairs(args, '--remount-ro')


def test_a_read_only_root_and_a_working_directory():
    args = sandbox.bwrap_args(spec(read_only_root=True, workdir='/srv/app'))
    assert {'/', '/tmp', '/var/tmp', '/run', '/dev'} <= set(_pairs(args, '--remount-ro'))
    assert _pairs(args, '--chdir') == ['/srv/app'] and '/srv/app' in _pairs(args, '--dir')
    assert args.index('--dir') < args.index('--remount-ro', args.index('--chdir'))


def test_exec_enters_the_container_as_its_user():
    argv = sandbox.exec_argv(77, ['/cg/a/cgroup.procs'], RunAs(0, 0, (0,)), ['CHOWN'],
                             ['ps'])
    assert argv[:6] == [sandbox.SHELL, '-c', sandbox.JOIN, 'kubelab-exec', '1',
                        '/cg/a/cgroup.procs']
    assert argv[6:16] == [sandbox.NSENTER, '--target', '77', '--mount', '--uts', '--ipc',
                          '--net', '--pid', '--wd', '--']
    assert argv[-3:] == ['--no-new-privs', '--', 'ps'] and '+chown' in argv[-6]


def test_the_pods_hosts_file_and_hostname():
    assert sandbox.pod_hostname('web-' + 'x' * 70, {}, 'shop')[0] == ('web-' + 'x' * 59)
    assert sandbox.pod_hostname('web', {'hostname': 'db-0', 'subdomain': 'db'}, 'shop') == \
        ('db-0', 'db')
    assert sandbox.pod_hostname('web', {'hostname': 'db-0', 'subdomain': 'db',
                                        'setHostnameAsFQDN': True}, 'shop')[0] == \
        'db-0.db.shop.svc.cluster.local'
    text = sandbox.etc_hosts('192.168.1.5', 'db-0', 'db', 'shop',
                             [{'ip': '10.0.0.1', 'hostnames': ['a', 'b']}])
    lines = text.splitlines()
    assert lines[0] == '# Kubernetes-managed hosts file.'
    assert '127.0.0.1\tlocalhost' in lines and '::1\tlocalhost ip6-localhost ip6-loopback' \
        in lines
    assert '192.168.1.5\tdb-0.db.shop.svc.cluster.local\tdb-0' in lines
    assert lines[-2:] == ['# Entries added by HostAliases.', '10.0.0.1\ta\tb']
    assert '192.168.1.5\tweb' in sandbox.etc_hosts('192.168.1.5', 'web', None, 'shop', [])


def test_runtime_paths_are_what_the_overlay_would_not_show():
    top = '/' + os.path.abspath(sys.prefix).split('/')[1]        # e.g. /work, /usr
    paths = sandbox.runtime_paths(hidden=(top,))
    assert any(os.path.abspath(sys.prefix) == p or sys.prefix.startswith(p + '/')
               for p in paths), paths                # the venv is hidden: bound back
    assert not any(p != q and p.startswith(q + '/') for p in paths for q in paths)
    assert all(p.startswith(top + '/') or p == top or os.stat(p).st_dev !=
               os.stat('/').st_dev for p in paths)


POD = {'volumes': [{'name': 'scratch', 'emptyDir': {}},
                   {'name': 'fast', 'emptyDir': {'medium': 'Memory', 'sizeLimit': '1Mi'}},
                   {'name': 'cfg', 'configMap': {'name': 'app', 'items': [
                       {'key': 'a', 'path': 'conf/a.ini', 'mode': 0o400}]}}]}


def test_volumes_on_disk_with_the_kubelets_atomic_writer(tmp_path):
    vols = PodVolumes(str(tmp_path), POD)
    scratch = vols.path('scratch')
    assert scratch.endswith('volumes/kubernetes.io~empty-dir/scratch')
    assert os.stat(scratch).st_mode & 0o777 == 0o777
    assert vols.tmpfs() == [(vols.path('fast'), 'mode=0777,size=1048576')]
    source = Sources('shop', configmaps={'app': {'data': {'a': 'x=1'}}})
    assert vols.refresh(source) is True and vols.refresh(source) is False
    cfg = vols.path('cfg')
    assert os.readlink(os.path.join(cfg, 'conf')) == '..data/conf'
    with open(os.path.join(cfg, 'conf', 'a.ini')) as f:
        assert f.read() == 'x=1'
    first = os.readlink(os.path.join(cfg, '..data'))
    assert os.stat(os.path.join(cfg, 'conf', 'a.ini')).st_mode & 0o777 == 0o400
    source.configmaps['app']['data']['a'] = 'x=2'
    assert vols.refresh(source) is True
    assert os.readlink(os.path.join(cfg, '..data')) != first
    assert not os.path.exists(os.path.join(cfg, first))     # the old version is gone
    with open(os.path.join(cfg, 'conf', 'a.ini')) as f:
        assert f.read() == 'x=2'
    container = {'name': 'c', 'volumeMounts': [
        {'name': 'cfg', 'mountPath': '/etc/a.ini', 'subPath': 'conf/a.ini'},
        {'name': 'scratch', 'mountPath': '/work', 'subPathExpr': '$(POD)'},
        {'name': 'scratch', 'mountPath': '/ro', 'readOnly': True}]}
    binds = vols.binds(container, {'POD': 'web-1'})
    assert binds[0].source == os.path.realpath(os.path.join(cfg, 'conf', 'a.ini'))
    assert not binds[0].writable                       # configMap files: read-only
    assert binds[1].source == os.path.join(scratch, 'web-1') and binds[1].writable
    assert os.path.isdir(binds[1].source)              # made, as the kubelet makes it
    assert not binds[2].writable
    vols.remove()
    assert not os.path.exists(os.path.join(str(tmp_path), 'volumes'))


@pytest.mark.parametrize('v2', [True, False])
def test_limits_and_readings_in_each_cgroup_version(tmp_path, v2):
    """The files the kubelet writes and reads, on a fake cgroup tree of each kind."""
    roles = ('unified', 'memory', 'cpu', 'cpuacct')
    dirs = ({r: str(tmp_path / 'kubelab') for r in roles} if v2 else
            {r: str(tmp_path / r / 'kubelab') for r in roles})
    lab = cgroups.LabCgroups(dirs, v2)
    lab.add_pod('u1', memory=64 << 20, cpu=500, cpu_request=100)
    lab.add_container('u1', 'app', memory=32 << 20, cpu=250, cpu_request=0)

    def read(role, *parts):
        with open(os.path.join(dirs[role], 'podu1', *parts)) as f:
            return f.read()
    if v2:
        assert read('memory', 'memory.max') == str(64 << 20)
        assert read('memory', 'app', 'memory.max') == str(32 << 20)
        assert read('memory', 'app', 'memory.oom.group') == '1'
        assert read('cpu', 'app', 'cpu.max') == '25000 100000'
        assert (read('cpu', 'cpu.weight'), read('cpu', 'app', 'cpu.weight')) == ('4', '1')
    else:
        assert read('memory', 'app', 'memory.limit_in_bytes') == str(32 << 20)
        assert read('cpu', 'app', 'cpu.cfs_quota_us') == '25000'
        assert (read('cpu', 'cpu.shares'), read('cpu', 'app', 'cpu.shares')) == ('102', '2')
    assert lab.procs_files('u1', 'app') == sorted(
        {os.path.join(d, 'podu1', 'app', 'cgroup.procs') for d in dirs.values()})
    app = os.path.join(dirs['memory'], 'podu1', 'app')
    with open(os.path.join(app, 'memory.events' if v2 else 'memory.oom_control'), 'w') as f:
        f.write('oom 1\noom_kill 1\n' if v2 else 'oom_kill_disable 0\noom_kill 1\n')
    with open(os.path.join(app, 'memory.current' if v2 else 'memory.usage_in_bytes'),
              'w') as f:
        f.write(str(10 << 20))
    with open(os.path.join(app, 'memory.stat'), 'w') as f:
        f.write(('inactive_file' if v2 else 'total_inactive_file') + f' {2 << 20}\n')
    with open(os.path.join(dirs['unified'], 'podu1', 'app', 'cpu.stat'), 'w') as f:
        f.write('usage_usec 1500\nuser_usec 1000\n')
    assert lab.oom_kills('u1', 'app') == 1
    assert lab.usage('u1', 'app') == (1_500_000, 8 << 20)


def test_the_state_directory_is_hidden_wherever_it_is():
    assert sandbox.hidden_paths('/run/kubelab') == sandbox.HIDDEN
    assert sandbox.hidden_paths('/var/lib/kubelab')[-1] == '/var/lib/kubelab'
    ovs_run = '/opt/kubelab/ovs-4.0.0/var/run/openvswitch'
    assert sandbox.hidden_paths('/run/kubelab', ovs_run) == sandbox.HIDDEN + (ovs_run,)
    assert sandbox.hidden_paths('/run/kubelab', '/run/openvswitch') == sandbox.HIDDEN


def test_an_emulated_image_counts_as_started_once_it_says_it_serves(tmp_path, monkeypatch):
    """Python takes a second where the real binary takes milliseconds: the kubelet
    probes and calls ready an emulated container only once it has said it serves, at
    the latest EMULATED_START_LIMIT after its start; other programs at once."""
    from topo import cri, kubelet, prober
    from topo.images import announce_started, runtime
    marker = tmp_path / 'started'
    marker.write_text('')
    agnhost = {'name': 'a', 'image': 'registry.k8s.io/e2e-test-images/agnhost:2.53',
               'args': ['netexec']}
    assert runtime.is_emulated(agnhost)
    assert not runtime.is_emulated({'name': 'b', 'image': 'busybox:1.36',
                                    'command': ['sh']})
    c = kubelet.Container(agnhost, started_mono=100.0)
    c.run = cri.Started(None, 1, RunAs(0, 0, (0,)), [], {}, [], str(marker))
    assert not prober._serving(c, 101.0)
    assert prober._serving(c, 100.0 + prober.EMULATED_START_LIMIT + 0.1)
    monkeypatch.setenv('KUBELAB_STARTED', str(marker))
    announce_started()
    assert prober._serving(c, 101.0)
    c.run.started_file = None                   # not an emulated image
    assert prober._serving(c, 100.0)
    monkeypatch.delenv('KUBELAB_STARTED')
    announce_started()                          # outside a lab container: nothing
