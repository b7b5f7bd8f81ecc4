"""``python -m kubelab.daemon``: run one lab until it is told to stop (``kubelab up``
starts it in the background)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from kubelab.daemon.lab import Lab
from kubelab.daemon.statedir import state_path
from services.cluster import default_cluster, load_cluster_file
from services.errors import KubelabError

LOG = logging.getLogger('kubelab.daemon')


def main(argv=None):
    parser = argparse.ArgumentParser(prog='kubelab-daemon')
    parser.add_argument('--cluster')
    parser.add_argument('--manifests', help='a JSON file with the objects to apply')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format='%(asctime)s %(name)s %(levelname)s %(message)s')
    cluster = load_cluster_file(args.cluster) if args.cluster else default_cluster()
    manifests = []
    if args.manifests:
        with open(args.manifests) as f:
            manifests = json.load(f)
        os.unlink(args.manifests)
    lab = Lab(cluster, manifests)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: lab.done.set())
    code = 0
    try:
        lab.up()
        open(state_path('ready'), 'w').close()
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
