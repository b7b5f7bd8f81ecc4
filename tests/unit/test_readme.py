"""The README and the docs stay true where a test can tell without a lab: every
``kubelab`` command they show parses with the CLI's own parser (a verb or an option the
CLI does not have fails here, not in front of a learner), the cluster file the README
shows is the default cluster, the counts it gives are the counts of the repository, and
every program its commands run on the machine or in the lab is one the install
installs. What the commands print is checked by running them (issue 21's pass over
every claim); this keeps the part a unit test can keep."""

import argparse
import pathlib
import re
import shlex

import pytest

from kubelab.cli.main import build_parser, parse
from services.cluster import default_cluster, load_cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'
PAGES = [README, ROOT / 'labs' / 'README.md', *sorted((ROOT / 'labs').glob('*/README.md')),
         *sorted((ROOT / 'docs').glob('*.md'))]


def _text(path):
    return path.read_text(encoding='utf-8')


def _code_lines(text):
    """(line, inline) for the page's code: indented blocks, fenced blocks (their
    commands start with ``sudo``: the tables and drawings there are not commands) and
    inline spans."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith('```'):
            fenced = not fenced
        elif fenced and line.strip().startswith('sudo '):
            lines.append((line.strip(), False))
        elif not fenced and line.startswith('    '):
            lines.append((line.strip(), False))
    lines += [(span, True) for span in re.findall(r'`([^`\n]+)`', text)]
    return lines


def _kubelab_argv(line):
    """The argv of a ``[sudo] kubelab ...`` command on this line (up to a pipe, a
    comment or another command), or None. Synopses (``[...]``, ``a|b``, ``...``) are
    not commands."""
    if not re.match(r'(sudo )?kubelab \S', line):
        return None
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for stop in ('|', '&&', ';', '||', '>', '2>&1'):
        if stop in words:
            words = words[:words.index(stop)]
    if words and words[0] == 'sudo':
        words = words[1:]
    argv = words[1:]
    if any('[' in w or '...' in w or re.search(r'\w\|\w', w) for w in argv):
        return None
    return argv


VERBS = set(build_parser()._subparsers._group_actions[0].choices)


def _commands():
    out = []
    for page in PAGES:
        for line, inline in _code_lines(_text(page)):
            argv = _kubelab_argv(line)
            if argv and (argv[0] in VERBS or not inline):
                name = f'{page.relative_to(ROOT)}: {" ".join(argv)}'[:100]
                out.append(pytest.param(argv, inline, id=name))
    return out


COMMANDS = _commands()


class Refused(Exception):
    pass


def _refuse(self, message):
    raise Refused(message)


def test_the_pages_show_commands():
    assert len(COMMANDS) > 60


@pytest.mark.parametrize('argv,inline', COMMANDS)
def test_every_command_shown_parses(argv, inline, monkeypatch):
    """As ``kubelab.cli.main.main`` parses it. A span in the prose (`kubelab exec`) may
    name a verb without its arguments, or with placeholders (N, NAME)."""
    monkeypatch.setattr(argparse.ArgumentParser, 'error', _refuse)
    try:
        parse(argv)
    except Refused as exc:
        placeholder = re.search(r"invalid \w+ value: '[A-Z]+'", str(exc))
        if inline and ('are required' in str(exc) or placeholder):
            return
        pytest.fail(f'kubelab {" ".join(argv)}: the CLI refuses it: {exc}')


def test_the_readme_cluster_file_is_the_default_cluster():
    block = re.search(r'### The cluster.*?```yaml\n(.*?)```', _text(README), re.S).group(1)
    assert load_cluster(block, 'README.md') == default_cluster()


def test_the_invalid_corpus_count_is_the_readmes():
    count = len(list((ROOT / 'tests' / 'data' / 'invalid').glob('*.yaml')))
    said = re.search(r'`tests/data/invalid/` holds (\d+) manifests', _text(README))
    assert said and int(said.group(1)) == count


#: The programs the pages run on the machine or in the lab's hosts and pods, and the
#: Debian package of each (busybox's applets, iproute2 and the lab's own tools aside).
PROGRAMS = {'jq': 'jq', 'curl': 'curl', 'arping': 'iputils-arping', 'tcpdump': 'tcpdump',
            'wrk': 'wrk', 'iperf3': 'iperf3', 'dot': 'graphviz', 'make': 'make'}


def test_the_install_installs_every_program_the_pages_run():
    install = _text(ROOT / 'scripts' / 'install.sh')
    listed = set(re.search(r'packages=\((.*?)\)', install, re.S).group(1).split())
    pages = ' '.join(_text(p) for p in PAGES)
    used = {prog for prog in PROGRAMS if re.search(rf'(?<![\w/-]){prog} ', pages)}
    assert {'jq', 'curl', 'arping'} <= used
    assert not {PROGRAMS[prog] for prog in used} - listed
