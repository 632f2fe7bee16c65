#!/bin/sh
# install-deps.sh - the one list of Debian packages mxbridge needs to build,
# package (make deb), test, demo and benchmark.  Used by the README,
# .ci/run, make demo and make check.  Installs only what is missing; needs
# root to install.
set -e
PKGS="build-essential pkg-config libuv1-dev libssl-dev libldns-dev
libnetfilter-queue-dev libmnl-dev libnftables-dev libcmocka-dev mandoc
iproute2 iptables nftables kmod procps psmisc python3 openssl ca-certificates
postfix swaks libio-socket-inet6-perl libnet-ssleay-perl dnsmasq-base ldnsutils haproxy
tcpdump clang libclang-rt-14-dev patchelf systemd util-linux passwd
libseccomp-dev libcap-ng-dev
rspamd clamav-daemon clamav-milter opendkim opendkim-tools python3-dkim
debhelper dpkg-dev lintian git debootstrap wget zstd
prometheus nsd unbound"

# the user the daemon drops to (its "user" default, which the package
# makes): the tests, the demo and the benchmark run it as that user
ensure_user() {
	getent passwd _mxbridge >/dev/null && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: no user _mxbridge (run as root)" >&2
		return 1
	fi
	echo "install-deps: adding the system user _mxbridge"
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
	    --shell /usr/sbin/nologin _mxbridge
}

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
	    grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	ensure_user
	exit $?
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing:$missing (run as root)" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# postfix asks debconf questions; a local-only answer keeps it quiet.
# freshclam (clamav-daemon needs clamav-freshclam) must never run as a
# daemon or download signatures: the tests write their own.
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
clamav-freshclam clamav-freshclam/autoupdate_freshclam select manual
SEL

# The content-inspection engines the milter tests start themselves
# (rspamd, clamd, clamav-milter, opendkim, freshclam), prometheus
# (only its promtool is wanted: t-metrics checks a scrape with "promtool
# check metrics"), and the DNS servers t-mta-dane runs in its namespaces
# (nsd, unbound: started on the host they would take port 53), must not be started by their packages: a policy-rc.d that says 101 ("action forbidden")
# while apt-get runs (invoke-rc.d and deb-systemd-invoke honour it), the
# one already there (if any) put back afterwards, whatever happens.
ENGINES="rspamd clamd freshclam clamav-milter opendkim prometheus nsd unbound"
POLICY=/usr/sbin/policy-rc.d
POLICY_SAVED=
# engines in our own network namespace (a test's own engines live in the
# test's namespaces and are never touched)
engine_pids() {
	hostns=$(readlink /proc/$$/ns/net) || return 0
	for e in $ENGINES; do pgrep -x "$e" || true; done 2>/dev/null | sort -n |
	while read -r pid; do
		if [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$hostns" ]; then
			echo "$pid"
		fi
	done
}
policy_restore() {
	if [ -n "$POLICY_SAVED" ]; then
		mv -f "$POLICY_SAVED" "$POLICY"
	else
		rm -f "$POLICY"
	fi
}
before=$(engine_pids)
if [ -e "$POLICY" ]; then
	POLICY_SAVED=$(mktemp /tmp/policy-rc.d.saved.XXXXXX)
	cp -p "$POLICY" "$POLICY_SAVED"
fi
trap 'policy_restore' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
printf '#!/bin/sh\n# install-deps.sh: no service starts while it installs\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"
rc=0
apt-get install -y -q --no-install-recommends $missing || rc=$?
policy_restore
trap - EXIT INT TERM
# whatever engine the installation started anyway (a maintainer script
# that ignores policy-rc.d): those processes, by pid, none that ran before
for pid in $(engine_pids); do
	echo "$before" | grep -qx "$pid" && continue
	echo "install-deps: stopping $(ps -o comm= -p "$pid") (pid $pid), started by the installation"
	kill "$pid" 2>/dev/null
done
for pid in $(engine_pids); do
	echo "$before" | grep -qx "$pid" && continue
	sleep 1; kill -9 "$pid" 2>/dev/null
done
[ "$rc" -eq 0 ] || exit "$rc"
# nor at boot: the DNS servers' units (unbound-resolvconf would rewrite
# the host's resolv.conf) stay disabled
if command -v systemctl >/dev/null 2>&1; then
	for u in nsd unbound unbound-resolvconf; do
		systemctl disable "$u" >/dev/null 2>&1 || true
	done
fi
ensure_user
