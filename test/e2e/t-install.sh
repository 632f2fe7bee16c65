#!/bin/bash
# t-install: "make install" as an admin or a package build uses it.
#   1. staged (DESTDIR): the binaries, mxbridge-netfilter, the man pages,
#      both systemd units, an example configuration (0640) and the
#      /etc/default file, the spool 0700; the units name the final paths,
#      never DESTDIR;
#   2. a second install keeps an edited configuration;
#   3. installed for real into a scratch PREFIX: systemd-analyze verify
#      is clean for both units, systemd-analyze security --offline scores
#      mxbridge.service at 2.0 or lower, and the example configuration
#      passes mxbridge -n.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need make systemd-analyze
BIN=${MXB_BIN:-$TB_REPO/build}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
T=$(mktemp -d /tmp/t-install.XXXXXX) || fail "mktemp"
# no testbed here (tb_init's trap would do this): keep the test's status
trap 'rc=$?; rm -rf "$T"; exit $rc' EXIT

inst() { make -s -C "$TB_REPO" install O="$BIN" "$@" >"$T/make.out" 2>&1 ||
	fail "make install $*: $(tail -n 5 "$T/make.out")"; }

# 1. staged
D=$T/stage
inst DESTDIR="$D" PREFIX=/usr SYSCONFDIR=/etc
for f in usr/sbin/mxbridge usr/sbin/mxbridgectl usr/sbin/mxbridge-netfilter; do
	[ -x "$D/$f" ] || fail "not installed executable: $f"
done
for f in usr/share/man/man5/mxbridge.conf.5 usr/share/man/man8/mxbridge.8 \
	usr/share/man/man8/mxbridgectl.8 usr/share/man/man8/mxbridge-netfilter.8 \
	usr/lib/systemd/system/mxbridge.service usr/lib/systemd/system/mxbridge-netfilter.service \
	etc/default/mxbridge; do
	[ -f "$D/$f" ] || fail "not installed: $f"
done
[ "$(stat -c %a "$D/etc/mxbridge/mxbridge.conf")" = 640 ] || fail "mxbridge.conf mode $(stat -c %a "$D/etc/mxbridge/mxbridge.conf")"
[ "$(stat -c %a "$D/var/spool/mxbridge")" = 700 ] || fail "spool mode $(stat -c %a "$D/var/spool/mxbridge")"
grep -q "^ExecStart=/usr/sbin/mxbridge -d -f /etc/mxbridge/mxbridge.conf$" "$D/usr/lib/systemd/system/mxbridge.service" ||
	fail "ExecStart: $(grep ExecStart= "$D/usr/lib/systemd/system/mxbridge.service")"
grep -rq "$D\|@[A-Z]*@" "$D/usr/lib/systemd/system" "$D/etc/mxbridge" &&
	fail "DESTDIR or a placeholder inside an installed file: $(grep -rn "$D\|@[A-Z]*@" "$D/usr/lib/systemd/system" "$D/etc/mxbridge" | head -n 2)"

# the service starts the daemon as its user with one capability
for l in Type=notify User=_mxbridge Group=_mxbridge AmbientCapabilities=CAP_NET_ADMIN \
    CapabilityBoundingSet=CAP_NET_ADMIN NoNewPrivileges=yes; do
	grep -qx "$l" "$D/usr/lib/systemd/system/mxbridge.service" ||
		fail "mxbridge.service lacks $l"
done

# 2. an edited configuration survives
echo "# edited by the admin" >>"$D/etc/mxbridge/mxbridge.conf"
inst DESTDIR="$D" PREFIX=/usr SYSCONFDIR=/etc
grep -q "edited by the admin" "$D/etc/mxbridge/mxbridge.conf" || fail "make install overwrote mxbridge.conf"

# 3. for real, in a scratch prefix: the units verify and score
R=$T/root
inst PREFIX="$R/usr" SYSCONFDIR="$R/etc" SPOOLDIR="$R/spool" UNITDIR="$R/units"
for u in mxbridge mxbridge-netfilter; do
	out=$(cd "$R/units" && systemd-analyze verify --man=no "$R/units/$u.service" 2>&1) ||
		fail "systemd-analyze verify $u.service: $out"
	[ -z "$out" ] || fail "systemd-analyze verify $u.service said: $out"
done
score=$(systemd-analyze security --offline=true "$R/units/mxbridge.service" 2>&1 |
	sed -n 's/.*Overall exposure level for mxbridge.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure score: $(systemd-analyze security --offline=true "$R/units/mxbridge.service" 2>&1 | tail -n 2)"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "mxbridge.service exposure $score, want 2.0 or lower"
out=$("$R/usr/sbin/mxbridge" -n -f "$R/etc/mxbridge/mxbridge.conf" 2>&1) ||
	fail "the example configuration does not pass -n: $out"
pass "make install: staged with DESTDIR (final paths in the units), an edited mxbridge.conf kept, both units verify clean, mxbridge.service exposure $score"
