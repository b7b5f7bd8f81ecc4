"""``python -m kubelab.daemon``: run one lab until it is told to stop (``kubelab up``
starts it in the background, the manifests to apply on its standard input as JSON).

It checks the state directory and takes the instance locks first; when another lab
holds them it says so and exits without touching anything (no cleanup: what is there
is the other lab's)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys

from kubelab.daemon.instance import InstanceLock
from kubelab.daemon.lab import Lab
from kubelab.daemon.statedir import check_state_dir, state_path, write_file
import services
from services.cluster import default_cluster, load_cluster_file
from services.errors import KubelabError

LOG = logging.getLogger('kubelab.daemon')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='kubelab-daemon')
    parser.add_argument('--cluster')
    parser.add_argument('--manifests-stdin', action='store_true',
                        help='read the objects to apply (a JSON list) from standard input')
    args = parser.parse_args(argv)
    # The store holds millions of small objects at 10,000 Services; the default
    # thresholds re-scan them all every few hundred allocations (measured: half of the
    # time of 10,000 Services, issue 20). The lab makes few reference cycles.
    gc.set_threshold(*services.GC_THRESHOLDS)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format='%(asctime)s %(name)s %(levelname)s %(message)s')
    manifests = json.load(sys.stdin) if args.manifests_stdin else []
    lock = InstanceLock()
    try:
        check_state_dir()
        cluster = load_cluster_file(args.cluster) if args.cluster else default_cluster()
        lock.acquire()
    except KubelabError as exc:
        LOG.error('%s', exc)
        print(f'error: {exc}', file=sys.stderr)
        return 1
    try:
        return run(Lab(cluster, manifests))
    finally:
        lock.release()


def run(lab: Lab) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: lab.done.set())
    code = 0
    try:
        lab.up()
        write_file(state_path('ready'), str(os.getpid()).encode())
        LOG.info('lab is ready')
        lab.supervise()
    except KubelabError as exc:
        LOG.error('%s', exc)
        print(f'error: {exc}', file=sys.stderr)
        code = 1
    except Exception:
        LOG.exception('the lab failed')
        code = 1
    finally:
        lab.down()
        LOG.info('lab is down')
    return code


if __name__ == '__main__':
    sys.exit(main())
