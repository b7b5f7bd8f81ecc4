#!/usr/bin/env bash
# Install what kubelab needs on a Debian 12 machine, as root. Safe to run again:
# every step checks first and does nothing when its work is already done.
#   - Debian packages: Open vSwitch, Mininet's mnexec, busybox, iperf3, ethtool, nginx
#     (installed without starting its own service and not enabled at boot: the lab runs
#     nginx in its pods; scripts/lib/services.sh), bubblewrap (the containers' sandboxes), ...
#   - Open vSwitch started if it does not answer (no systemd needed)
#   - a Python virtual environment in $KUBELAB_VENV (default: .venv in the repo) with the
#     pinned dependencies of requirements.txt and kubelab itself (editable)
#   - /usr/local/bin/kubelab -> the venv's kubelab
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KUBELAB_VENV:-$repo/.venv}"
python="${KUBELAB_PYTHON:-/usr/bin/python3}"
say() { echo "[install] $*"; }
. "$repo/scripts/lib/services.sh"
policy=/usr/sbin/policy-rc.d

if [ "$(id -u)" -ne 0 ]; then
  echo "kubelab's install needs root (apt-get, Open vSwitch): run it with sudo" >&2
  exit 1
fi

# Tried on Debian 12 (bookworm) only: Ryu 4.34, kubelab's OpenFlow library, has had no
# release since 2019 and runs with eventlet 0.33.3 on bookworm's Python 3.11; newer
# systems (Ubuntu 24.04, Debian 13) ship Python 3.12+, where that pair is untried.
. /etc/os-release 2>/dev/null || true
if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
  say "warning: kubelab is tried on Debian 12 only, this is ${PRETTY_NAME:-an unknown system};" \
      "going on (the Vagrantfile gives a Debian 12 VM)"
fi

packages=(openvswitch-switch mininet busybox iperf3 ethtool iputils-ping iproute2 curl
          tcpdump util-linux python3 python3-venv python3-dev nginx openssl wrk graphviz
          dpkg-dev gcc make xz-utils jq bubblewrap iputils-arping libjemalloc-dev patch)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
kubelab_clear_stale "$policy"          # left by an install that was killed
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's nginx package starts a system nginx on port 80 and enables it at boot: the
  # lab only wants the binary. Refuse its start (unless the machine has a policy-rc.d
  # of its own), disable it at boot afterwards; only when this install adds it.
  adds_nginx=no
  [[ " ${missing[*]} " == *" nginx "* ]] && adds_nginx=yes
  own_policy=no
  if [ "$adds_nginx" = yes ] && [ ! -e "$policy" ]; then
    trap 'kubelab_unblock "$policy"' EXIT
    trap 'kubelab_unblock "$policy"; exit 130' INT TERM HUP
    kubelab_block_starts "$policy" $$ nginx nginx.service
    own_policy=yes
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$own_policy" = yes ]; then
    kubelab_unblock "$policy"
    trap - EXIT INT TERM HUP
  fi
  if [ "$adds_nginx" = yes ]; then
    kubelab_not_at_boot nginx
    # The machine's own policy-rc.d may have let it start: it did not run before.
    if [ "$own_policy" = no ] && [ -e /run/nginx.pid ]; then
      service nginx stop >/dev/null 2>&1 || true
    fi
  fi
fi

# Open vSwitch: with the kernel module, the machine's (Debian's) with its kernel datapath;
# without it (the userspace datapath), a newer one built from Debian's source into
# /opt/kubelab/ovs (Debian 12's 3.1.0 loses connections there; scripts/build-ovs.sh says
# why). Cached: a second install does nothing. KUBELAB_OVS=system skips it.
if [ "${KUBELAB_OVS:-}" != system ] && { [ "${KUBELAB_DATAPATH:-}" = user ] || {
     [ "${KUBELAB_DATAPATH:-}" != kernel ] && [ ! -e /sys/module/openvswitch ] &&
     ! modprobe -q openvswitch 2>/dev/null; }; }; then
  if ! bash "$repo/scripts/build-ovs.sh"; then
    say "WARNING: the newer Open vSwitch could not be built; the lab runs on Debian's" \
        "$(ovs-vswitchd --version | head -1 | awk '{print $NF}'), which loses short" \
        "connections under port reuse on the userspace datapath"
  fi
fi

stamp="$venv/.kubelab-requirements"
want="$(sha256sum "$repo/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating the Python environment in $venv"
  "$python" -m venv "$venv"
  # Ryu 4.34's setup.py breaks with setuptools >= 68 in an isolated build: build it with
  # a pinned setuptools and no build isolation.
  "$venv/bin/pip" install -q --disable-pip-version-check "setuptools==67.8.0" wheel
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation \
      -r "$repo/requirements.txt"
  echo "$want" > "$stamp"
fi
if [ ! -x "$venv/bin/kubelab" ] || ! (cd / && "$venv/bin/python" -c "import kubelab, os, sys; sys.exit(os.path.dirname(os.path.dirname(os.path.abspath(kubelab.__file__))) != '$repo')") 2>/dev/null; then
  say "installing kubelab from $repo"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps -e "$repo"
fi
ln -sf "$venv/bin/kubelab" /usr/local/bin/kubelab
# Start the Open vSwitch the lab runs on, if it does not answer (topo/ovs.py chooses).
ovs="$(cd "$repo" && "$venv/bin/python" -m topo.ovs start)" || exit 1
say "ready: /usr/local/bin/kubelab ($("$venv/bin/python" --version); ${ovs#running: })"
