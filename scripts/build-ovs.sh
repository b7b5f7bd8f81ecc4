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
# Two changes of the lab's own, both for the main thread of ovs-vswitchd, which on the
# userspace datapath polls every port and carries every packet (measured with perf under
# the bench's short connections):
# - the patches in scripts/ovs-patches/ (each says what and why): accept() only when a
#   connection waits on a bridge's management or snoop listener;
# - linked with jemalloc: each poll of a port allocates and frees a batch of 32 packet
#   buffers, which glibc's malloc served slowly once conntrack's entries had
#   fragmented its heap (a quarter of the thread's time).
# Together: about a quarter more new connections/s on every path (kubelab bench).
#
# Cached: when /opt/kubelab/ovs holds a build of a version >= MIN_VERSION made with this
# RECIPE (the patches, jemalloc), this does nothing. Any failure leaves the machine as it
# was (the half-built tree is removed): with an older build in place it says so and
# keeps it, else it returns non-zero and the caller falls back to Debian's Open vSwitch
# with a warning. It does not replace a build a running lab is using.
set -euo pipefail

MIN_VERSION=3.1.3                       # the first with the userspace conntrack fixes
ROOT="${KUBELAB_OVS_ROOT:-/opt/kubelab}"      # another root: for the tests only
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE="jemalloc, patches $(cat "$here"/ovs-patches/*.patch | sha256sum | cut -c1-12)"
say() { echo "[build-ovs] $*"; }
recipe_of() { head -1 "$1/share/kubelab-build" 2>/dev/null || true; }   # line 1

version_ok() {   # version_ok 4.0.0 -> true when >= MIN_VERSION
  [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$1" | sort -V | head -1)" = "$MIN_VERSION" ]
}

old=no           # a usable build of another recipe is in place
if [ -x "$ROOT/ovs/sbin/ovs-vswitchd" ]; then
  have="$("$ROOT/ovs/sbin/ovs-vswitchd" --version | head -1 | awk '{print $NF}')"
  if version_ok "$have"; then
    if [ "$(recipe_of "$ROOT/ovs")" = "$RECIPE" ]; then
      say "cached: Open vSwitch $have in $(readlink -f "$ROOT/ovs") ($RECIPE)"
      exit 0
    fi
    old=yes
    if OVS_RUNDIR="$(readlink -f "$ROOT/ovs")/var/run/openvswitch" \
        "$ROOT/ovs/bin/ovs-vsctl" --timeout=2 list-br 2>/dev/null | grep -q '^kl-'; then
      say "a lab runs on the build in $(readlink -f "$ROOT/ovs"): keeping it (\`kubelab" \
          "down\`, then install again, for the build with: $RECIPE)"
      exit 0
    fi
  fi
fi
# Past this point a failure keeps the build in place, when there is one.
keep_old() {
  [ "$old" = yes ] && say "keeping the build in place: $(readlink -f "$ROOT/ovs")" && exit 0
  exit 1
}

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
  keep_old
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
# A patch that no longer applies (the unstable source moved on) is left out, said here.
left_out=()
for p in "$here"/ovs-patches/*.patch; do
  if patch -p1 --forward --silent <"$p" >"$work/patch.log" 2>&1; then
    say "patched: $(basename "$p")"
  else
    say "warning: $(basename "$p") does not apply to $version: building without it"
    left_out+=("$(basename "$p")")
  fi
done
say "building Open vSwitch $version (no DPDK, no SSL, jemalloc) into $prefix: a few minutes"
./configure --prefix="$prefix" --disable-ssl --enable-silent-rules LIBS=-ljemalloc \
  >"$work/configure.log" 2>&1 || { tail -20 "$work/configure.log"; keep_old; }
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log"; keep_old; }
# The old build's daemons run from a folder about to be replaced or left (its run
# directory and database are in it): stop them first; the install starts the new ones.
for build in "$(readlink -f "$ROOT/ovs" 2>/dev/null || true)" "$prefix"; do
  if [ -n "$build" ] && [ -x "$build/share/openvswitch/scripts/ovs-ctl" ]; then
    "$build/share/openvswitch/scripts/ovs-ctl" stop >/dev/null 2>&1 || true
  fi
done
rm -rf "$prefix"
make install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; rm -rf "$prefix"; exit 1; }
# Line 1 the recipe (what the cache compares), then what the build had to leave out.
{ echo "$RECIPE"; [ "${#left_out[@]}" -eq 0 ] || echo "left out: ${left_out[*]}"; } \
  >"$prefix/share/kubelab-build"
ln -sfn "$prefix" "$ROOT/ovs"
say "built: $("$ROOT/ovs/sbin/ovs-vswitchd" --version | head -1) ($RECIPE)"
