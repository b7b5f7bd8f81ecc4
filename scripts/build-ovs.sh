#!/usr/bin/env bash
# Build the lab's own Open vSwitch from the newer source Debian's archive carries, for
# machines without the Open vSwitch kernel module (the userspace datapath).
#
# Why: Debian 12's Open vSwitch 3.1.0 lacks upstream's userspace-conntrack fixes of
# 3.1.1-3.1.5. Under port reuse its log says "Unable to NAT due to tuple space exhaustion",
# it loses short connections through a ClusterIP and slows to a crawl, and a nat(src)
# commit can crash it (an assertion removed in 3.1.3). Debian unstable's source builds
# on bookworm without DPDK in a few minutes.
#
# What: the source of the newest `openvswitch` in Debian unstable, fetched with apt into
# a scratch directory (the machine's apt sources are not touched), unpacked with its
# Debian patches, configured with its own prefix /opt/kubelab/ovs-<version> (so its run
# directory, database and logs are its own: the machine's Open vSwitch, if it has one,
# keeps working), built and installed there; /opt/kubelab/ovs points at it. The lab
# (topo/ovs.py) runs on it when it is there.
#
# Cached: when /opt/kubelab/ovs holds a build of a version >= MIN_VERSION this does
# nothing. Any failure leaves the machine as it was (the half-built tree is removed)
# and returns non-zero: the caller falls back to Debian's Open vSwitch with a warning.
set -euo pipefail

MIN_VERSION=3.1.3                       # the first with the userspace conntrack fixes
ROOT=/opt/kubelab
say() { echo "[build-ovs] $*"; }

version_ok() {   # version_ok 4.0.0 -> true when >= MIN_VERSION
  [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$1" | sort -V | head -1)" = "$MIN_VERSION" ]
}

if [ -x "$ROOT/ovs/sbin/ovs-vswitchd" ]; then
  have="$("$ROOT/ovs/sbin/ovs-vswitchd" --version | head -1 | awk '{print $NF}')"
  if version_ok "$have"; then
    say "cached: Open vSwitch $have in $(readlink -f "$ROOT/ovs")"
    exit 0
  fi
fi

work="$(mktemp -d /tmp/kubelab-ovs-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# apt with a sources list and package lists of its own: only deb-src of unstable.
cat > sources.list <<'EOF'
deb-src http://deb.debian.org/debian unstable main
EOF
mkdir -p lists/partial
apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=-
          -o "Dir::State::Lists=$work/lists" -o APT::Get::List-Cleanup=0
          -o APT::Sandbox::User=root)
say "fetching the source of Debian unstable's openvswitch"
apt-get "${apt_opts[@]}" update -qq >/dev/null
apt-get "${apt_opts[@]}" source --download-only -qq openvswitch >/dev/null
dsc="$(ls openvswitch_*.dsc | head -1)"
dpkg-source -x "$dsc" src >/dev/null
version="$(sed -n 's/^AC_INIT(openvswitch, *\([0-9.]*\).*/\1/p' src/configure.ac)"
if ! version_ok "$version"; then
  say "unstable carries Open vSwitch $version, older than $MIN_VERSION: not building"
  exit 1
fi
prefix="$ROOT/ovs-$version"

cd src
# The tarball ships its generated files (configure, Makefile.in, the testsuite); with
# every file at one time, make never asks for autotools (bookworm's automake is older
# than the one that generated them). Debian's source drops upstream's debian/ folder,
# whose files the Makefile still lists: empty stand-ins for those.
find . -exec touch -h -d '2000-01-01 00:00:00' {} +
grep -o 'debian/[A-Za-z0-9_.+-]*' Makefile.in | sort -u | while read -r f; do
  [ -e "$f" ] || touch -d '2000-01-01 00:00:00' "$f"
done
say "building Open vSwitch $version (no DPDK, no SSL) into $prefix: a few minutes"
./configure --prefix="$prefix" --disable-ssl --enable-silent-rules >"$work/configure.log" 2>&1 \
  || { tail -20 "$work/configure.log"; exit 1; }
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log"; exit 1; }
rm -rf "$prefix"
make install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; rm -rf "$prefix"; exit 1; }
ln -sfn "$prefix" "$ROOT/ovs"
say "built: $("$ROOT/ovs/sbin/ovs-vswitchd" --version | head -1)"
