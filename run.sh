#!/usr/bin/env bash
# kubelab's entry point on a fresh Debian 12 machine, as root (tried there only):
#   ./run.sh demo    install what is missing, bring up the default lab, show traffic
#                    through it, take it down
#   ./run.sh test    install what is missing, run the whole test suite
#   ./run.sh bench   install what is missing, print the benchmark table
#   ./run.sh install only install
# Every command is safe to run again, and after a crashed run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${KUBELAB_VENV:-$PWD/.venv}"

bash scripts/install.sh
case "${1:-}" in
  install) ;;
  demo)  exec "$venv/bin/kubelab" demo ;;
  bench) shift; exec "$venv/bin/kubelab" bench "$@" ;;
  test)
    shift
    set +e
    "$venv/bin/python" -m pytest -ra tests "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
      echo "run.sh: pytest collected no tests: that is a failure, not a pass" >&2
      exit 1
    fi
    exit "$rc" ;;
  *) echo "usage: ./run.sh demo|test|bench|install" >&2; exit 2 ;;
esac
