# Keeping the machine's services as they were while kubelab's install adds packages.
# Sourced by scripts/install.sh; tests/unit/test_install_services.py runs each function
# (on files in a temporary directory, with stand-ins for the service tools).
#
# Debian's nginx package starts a system nginx on port 80 and enables it at boot; the
# lab only wants the binary (its pods run nginx on their own configuration). So, for a
# package the install adds (never for one the machine already had):
#   - while apt-get runs, a policy-rc.d refuses to start it (and only it: every other
#     service of the machine starts as usual). The file names the install's pid and
#     start time and removes itself the first time it is asked after that install is
#     gone, even if it was killed with kill -9 (no trap runs then); a trap removes it
#     on every other exit, and the next install removes a stale one first;
#   - afterwards it is disabled at boot (systemd and System V links), which later
#     upgrades keep.

KUBELAB_POLICY_MARK='# kubelab-install: refuses to start what the install adds'

# kubelab_block_starts FILE OWNER_PID NAME...: write FILE (a policy-rc.d) refusing to
# start NAME... while OWNER_PID is the process it is now.
kubelab_block_starts() {
  local file=$1 owner=$2; shift 2
  local started
  started=$(sed 's/.*) //' "/proc/$owner/stat" | cut -d' ' -f20)
  cat > "$file.kubelab-tmp" <<POLICY
#!/bin/sh
$KUBELAB_POLICY_MARK
# Written by kubelab's install (pid $owner): refuses to start $*; removes itself once
# that install is gone.
if [ "\$(sed 's/.*) //' /proc/$owner/stat 2>/dev/null | cut -d' ' -f20)" != "$started" ]; then
  rm -f "\$0"
  exit 0
fi
case "\$1" in
  $(printf '%s|' "$@" | sed 's/|$//')) exit 101 ;;
esac
exit 0
POLICY
  chmod 755 "$file.kubelab-tmp"
  mv -f "$file.kubelab-tmp" "$file"
}

# kubelab_unblock FILE: remove FILE if it is kubelab's (never the machine's own).
kubelab_unblock() {
  if [ -f "$1" ] && grep -qF "$KUBELAB_POLICY_MARK" "$1"; then
    rm -f "$1"
  fi
}

# kubelab_clear_stale FILE: remove a kubelab policy-rc.d whose install is gone.
kubelab_clear_stale() {
  if [ -f "$1" ] && grep -qF "$KUBELAB_POLICY_MARK" "$1"; then
    sh "$1" kubelab-check start >/dev/null 2>&1 || true    # removes itself when stale
  fi
}

# kubelab_not_at_boot NAME: do not start NAME at boot (systemd and System V init).
kubelab_not_at_boot() {
  if command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper disable "$1.service" >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [ -e "${KUBELAB_INITD:-/etc/init.d}/$1" ]; then
    update-rc.d "$1" disable >/dev/null 2>&1 || true
  fi
}
