#!/bin/bash
# t-deb: the Debian package ("make deb", or the .deb in MXB_DEB) passes
# lintian --fail-on error and is installed with dpkg -i into a fresh
# Debian 12 root (debootstrap, cached):
#   1. the system user and group _mxbridge; the programs, man pages and
#      units where the package puts them; the spool 0700 _mxbridge, the
#      configuration a conffile 0640 root:_mxbridge that passes mxbridge -n
#      (also as _mxbridge: the daemon reads it again after dropping to
#      it); no unit enabled; both units verify (systemd-analyze --root);
#   2. dpkg -i again (the upgrade path): an edited configuration kept, a
#      spool written by root handed to _mxbridge without following a
#      symbolic link or taking a file with several links;
#   3. dpkg --purge: the configuration gone, a spool that holds mail kept,
#      the user kept; installed and purged again with an empty spool, the
#      spool gone.
# No testbed, no namespaces: a chroot with nothing mounted in it.  The root
# comes from /var/cache/mxbridge-test/ (one tarball per package list), so
# only the first run downloads (MXB_DEB_MIRROR, default deb.debian.org).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
# the package is built from the sources, not from MXB_BIN: once is enough
case ${MXB_BUILD_TAG:-build} in
build) ;;
*) skip "package test runs once, in the plain pass" ;;
esac
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot)"
need debootstrap chroot dpkg-deb lintian systemd-analyze zstd wget sha256sum
MIRROR=${MXB_DEB_MIRROR:-http://deb.debian.org/debian}
CACHE=/var/cache/mxbridge-test
T=$(mktemp -d /tmp/t-deb.XXXXXX) || fail "mktemp"
R=$T/root

# debootstrap mounts proc and sys inside the root while it runs and may
# leave them behind if it dies: unmount whatever is below $T, deepest
# first, before the root goes (--one-file-system: never into a mount)
cleanup() {
	local rc=$? m
	trap - EXIT INT TERM
	for m in $(awk -v t="$T/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	rm -rf --one-file-system "$T"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# in_root CMD...: CMD inside the root, with an environment of its own (no
# host variable leaks in) and no terminal for dpkg to ask on
in_root() {
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
	    DEBIAN_FRONTEND=noninteractive chroot "$R" "$@" </dev/null
}
# perms PATH: "MODE OWNER:GROUP" as the root's own passwd and group say
perms() { in_root stat -c '%a %U:%G' "$1"; }

# ---------------------------------------------------------------- the .deb
if [ -n "${MXB_DEB:-}" ]; then
	DEB=$MXB_DEB
else
	ver=$(sed -n 's/^VERSION[[:space:]]*=[[:space:]]*//p' "$TB_REPO/Makefile")
	make -s -C "$TB_REPO" deb >"$T/make.out" 2>&1 ||
		fail "make deb: $(tail -n 5 "$T/make.out")"
	DEB=$TB_REPO/mxbridge_${ver}_$(dpkg --print-architecture).deb
fi
[ -f "$DEB" ] || fail "no package $DEB"
[ "$(dpkg-deb -f "$DEB" Package)" = mxbridge ] || fail "$DEB is not the mxbridge package"
# lintian's errors are what Debian would refuse; its warnings are let be
lintian --fail-on error "$DEB" >"$T/lintian.out" 2>&1 ||
	fail "lintian: $(grep -m 3 '^E:' "$T/lintian.out" || tail -n 3 "$T/lintian.out")"

# ---------------------------------------------------------------- the root
# What dpkg -i needs already there: the package's Depends (the first of
# each choice, no versions) and systemd, whose units systemd-analyze
# --root needs (sysinit.target ...).  The cache key is that list, so a new
# dependency makes a new root by itself.
inc=$( { dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*//; s/[[:space:]]//g'
	echo systemd; } | grep . | sort -u | paste -sd, -)
key=$(echo "bookworm minbase $inc" | sha256sum | cut -c1-16)
tarball=$CACHE/bookworm-minbase-$key.tar.zst
mkdir -p "$R"
if [ -f "$tarball" ]; then
	(set -o pipefail; zstd -dc "$tarball" | tar -C "$R" -xpf -) ||
		fail "cannot unpack $tarball (remove it for a new one)"
else
	wget -q -O /dev/null "$MIRROR/dists/bookworm/Release" ||
		skip "no cached root and $MIRROR is out of reach"
	note "no cached root: debootstrap bookworm (a minute or two) with $inc"
	debootstrap --variant=minbase --include="$inc" bookworm "$R" "$MIRROR" \
	    >"$T/debootstrap.out" 2>&1 ||
		fail "debootstrap: $(tail -n 3 "$T/debootstrap.out")"
	# the downloaded packages and lists are of no use to dpkg -i
	rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
	mkdir -p "$CACHE"
	# written aside and renamed: a run that dies halfway leaves no
	# truncated tarball for the next one to trust
	(set -o pipefail; tar -C "$R" -cf - . | zstd -q -T0 >"$tarball.$$") &&
		mv "$tarball.$$" "$tarball" ||
		{ rm -f "$tarball.$$"; fail "cannot write $tarball"; }
fi
# no maintainer script may start anything, whatever the root looks like
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 0755 "$R/usr/sbin/policy-rc.d"
cp "$DEB" "$R/tmp/mxbridge.deb" || fail "cannot copy $DEB into the root"

install_deb() {
	in_root dpkg -i /tmp/mxbridge.deb >"$T/dpkg.out" 2>&1 ||
		fail "dpkg -i $1: $(tail -n 5 "$T/dpkg.out")"
}

# ---------------------------------------------------------------- 1. install
install_deb "(first install)"
pw=$(in_root getent passwd _mxbridge) || fail "no user _mxbridge"
gr=$(in_root getent group _mxbridge) || fail "no group _mxbridge"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[ "$gid" = "$(echo "$gr" | cut -d: -f3)" ] || fail "_mxbridge's group is not _mxbridge: $pw / $gr"
[ "$uid" -lt 1000 ] || fail "_mxbridge is not a system user: $pw"
[ "$home" = /nonexistent ] && [ "$shell" = /usr/sbin/nologin ] ||
	fail "_mxbridge's home or shell: $pw"
for f in /usr/sbin/mxbridge /usr/sbin/mxbridgectl /usr/sbin/mxbridge-netfilter; do
	[ -f "$R$f" ] && [ -x "$R$f" ] || fail "not installed executable: $f"
done
files=$(in_root dpkg -L mxbridge) || fail "dpkg -L mxbridge"
for f in /usr/share/man/man5/mxbridge.conf.5.gz /usr/share/man/man8/mxbridge.8.gz \
	/usr/share/man/man8/mxbridgectl.8.gz /usr/share/man/man8/mxbridge-netfilter.8.gz \
	/lib/systemd/system/mxbridge.service /lib/systemd/system/mxbridge-netfilter.service \
	/etc/default/mxbridge /usr/share/doc/mxbridge/copyright; do
	grep -qx "$f" <<<"$files" || fail "not in the package: $f"
	[ -f "$R$f" ] || fail "not installed: $f"
done
[ "$(perms /var/spool/mxbridge)" = "700 _mxbridge:_mxbridge" ] ||
	fail "spool: $(perms /var/spool/mxbridge), want 700 _mxbridge:_mxbridge"
[ "$(perms /etc/mxbridge/mxbridge.conf)" = "640 root:_mxbridge" ] ||
	fail "mxbridge.conf: $(perms /etc/mxbridge/mxbridge.conf), want 640 root:_mxbridge"
conff=$(in_root dpkg-query -W -f='${Conffiles}' mxbridge)
for f in /etc/mxbridge/mxbridge.conf /etc/default/mxbridge; do
	grep -q "^ $f " <<<"$conff" || fail "not a conffile: $f"
done
out=$(in_root /usr/sbin/mxbridge -n -f /etc/mxbridge/mxbridge.conf 2>&1) ||
	fail "the shipped configuration does not pass mxbridge -n: $out"
out=$(in_root chroot --userspec=_mxbridge:_mxbridge / /usr/sbin/mxbridge -n \
	-f /etc/mxbridge/mxbridge.conf 2>&1) ||
	fail "mxbridge -n as _mxbridge (the reload's read): $out"
en=$(find "$R/etc/systemd/system" -name 'mxbridge*' 2>/dev/null)
[ -z "$en" ] || fail "enabled on install: ${en//$R/}"
out=$(cd / && systemd-analyze verify --man=no --root="$R" mxbridge.service \
	mxbridge-netfilter.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify said: $out"
# what the package does to a running system, read from its scripts: the
# daemon try-restarted on upgrade, never started, the rules unit neither
# (a restart would take the interception down and up)
pi=$R/var/lib/dpkg/info/mxbridge.postinst
grep -q "deb-systemd-invoke try-restart 'mxbridge.service'" "$pi" ||
	fail "postinst does not try-restart mxbridge.service"
grep -Eq "deb-systemd-invoke (start|restart)|try-restart.*netfilter" "$pi" &&
	fail "postinst starts or restarts more than a running daemon"
[ ! -e "$R/var/lib/dpkg/info/mxbridge.preinst" ] ||
	! grep -q "deb-systemd-invoke stop" "$R/var/lib/dpkg/info/mxbridge.preinst" ||
	fail "preinst stops a unit on upgrade"

# ---------------------------------------------------------------- 2. again
# the admin's edit, and a spool as a daemon running as root left it: a
# queued message, a hard link to a root file, a symbolic link to another
S=$R/var/spool/mxbridge
echo "# edited by the admin" >>"$R/etc/mxbridge/mxbridge.conf"
mkdir -p "$S/queue" "$S/tmp"
echo "a queued message" >"$S/queue/0123456789abcdef"
ln "$R/etc/issue" "$S/tmp/hardlink" || fail "cannot link /etc/issue into the spool"
ln -s /etc/shadow "$S/tmp/symlink"
chown -R -h root:root "$S/queue" "$S/tmp"
shadow=$(perms /etc/shadow)
install_deb "(again, the upgrade path)"
grep -q "edited by the admin" "$R/etc/mxbridge/mxbridge.conf" ||
	fail "dpkg -i again replaced the edited mxbridge.conf"
[ "$(perms /etc/mxbridge/mxbridge.conf)" = "640 root:_mxbridge" ] ||
	fail "mxbridge.conf after dpkg -i again: $(perms /etc/mxbridge/mxbridge.conf)"
for f in /var/spool/mxbridge /var/spool/mxbridge/queue /var/spool/mxbridge/queue/0123456789abcdef \
	/var/spool/mxbridge/tmp; do
	[ "$(perms "$f" | cut -d' ' -f2)" = _mxbridge:_mxbridge ] ||
		fail "after dpkg -i again $f is $(perms "$f")"
done
[ "$(perms /var/spool/mxbridge)" = "700 _mxbridge:_mxbridge" ] ||
	fail "spool after dpkg -i again: $(perms /var/spool/mxbridge)"
[ "$(perms /etc/issue | cut -d' ' -f2)" = root:root ] ||
	fail "a hard link in the spool gave _mxbridge /etc/issue: $(perms /etc/issue)"
[ "$(perms /etc/shadow)" = "$shadow" ] ||
	fail "a symbolic link in the spool was followed: /etc/shadow $(perms /etc/shadow)"

# ---------------------------------------------------------------- 3. purge
in_root dpkg --purge mxbridge >"$T/dpkg.out" 2>&1 ||
	fail "dpkg --purge: $(tail -n 5 "$T/dpkg.out")"
for f in /etc/mxbridge/mxbridge.conf /etc/default/mxbridge /usr/sbin/mxbridge \
	/lib/systemd/system/mxbridge.service; do
	[ ! -e "$R$f" ] || fail "left after purge: $f"
done
[ -f "$S/queue/0123456789abcdef" ] || fail "purge destroyed the queued mail"
grep -q "still holds mail" "$T/dpkg.out" || fail "purge kept the spool without a word: $(cat "$T/dpkg.out")"
in_root getent passwd _mxbridge >/dev/null || fail "purge removed the user _mxbridge"
# once more with nothing queued: the spool goes with the package
install_deb "(after purge, over the kept spool)"
[ "$(perms /var/spool/mxbridge)" = "700 _mxbridge:_mxbridge" ] ||
	fail "kept spool after a new install: $(perms /var/spool/mxbridge)"
rm -f "$S/queue/0123456789abcdef" "$S/tmp/hardlink" "$S/tmp/symlink"
in_root dpkg --purge mxbridge >"$T/dpkg.out" 2>&1 ||
	fail "dpkg --purge (empty spool): $(tail -n 5 "$T/dpkg.out")"
[ ! -e "$S" ] || fail "purge left an empty spool: $(find "$S" | sed "s|^$R||" | head -n 5)"
pass "$(basename "$DEB") on a fresh bookworm root: user _mxbridge, spool 700 and mxbridge.conf 640 root:_mxbridge, mxbridge -n OK, nothing enabled, both units verify, an edited conffile and the spool's owner survive dpkg -i again, purge keeps a spool with mail and removes an empty one"
