#!/usr/bin/env bash
# Install what kubelab needs on a Debian/Ubuntu machine, as root. Safe to run again:
# every step checks first and does nothing when its work is already done.
#   - Debian packages: Open vSwitch, Mininet's mnexec, busybox, iperf3, ethtool, nginx
#     (installed without starting its own service: the lab runs nginx in its pods),
#     bubblewrap (the containers' sandboxes), ...
#   - Open vSwitch started if it does not answer (no systemd needed)
#   - a Python virtual environment in $KUBELAB_VENV (default: .venv in the repo) with the
#     pinned dependencies of requirements.txt and kubelab itself (editable)
#   - /usr/local/bin/kubelab -> the venv's kubelab
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KUBELAB_VENV:-$repo/.venv}"
python="${KUBELAB_PYTHON:-/usr/bin/python3}"
say() { echo "[install] $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "kubelab's install needs root (apt-get, Open vSwitch): run it with sudo" >&2
  exit 1
fi

packages=(openvswitch-switch mininet busybox iperf3 ethtool iputils-ping iproute2 curl
          tcpdump util-linux python3 python3-venv python3-dev nginx openssl wrk graphviz
          bubblewrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's nginx package starts a system nginx on port 80: the lab only wants the
  # binary. A policy-rc.d that refuses service starts (unless the machine has its own).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if trap -p EXIT | grep -q policy-rc.d; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
  say "starting Open vSwitch"
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
  ovs-vsctl --timeout=10 show >/dev/null || { echo "Open vSwitch would not start" >&2; exit 1; }
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
say "ready: /usr/local/bin/kubelab ($("$venv/bin/python" --version), Open vSwitch $(ovs-vsctl --version | head -1 | awk '{print $NF}'))"
