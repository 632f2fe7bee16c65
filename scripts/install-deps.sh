#!/bin/sh
# install-deps.sh - the one list of Debian packages mxbridge needs to build,
# package (make deb), test, demo and benchmark.  Used by the README,
# .ci/run, make demo and make check.  Installs only what is missing; needs
# root to install.
set -e
PKGS="build-essential pkg-config libuv1-dev libssl-dev libldns-dev
libnetfilter-queue-dev libmnl-dev libcmocka-dev mandoc
iproute2 iptables nftables kmod procps psmisc python3 openssl ca-certificates
postfix swaks libio-socket-inet6-perl libnet-ssleay-perl dnsmasq-base ldnsutils haproxy
tcpdump clang libclang-rt-14-dev patchelf systemd util-linux passwd
libseccomp-dev libcap-ng-dev
debhelper dpkg-dev lintian git debootstrap wget zstd"

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
# postfix asks debconf questions; a local-only answer keeps it quiet
echo "postfix postfix/main_mailer_type select No configuration" |
    debconf-set-selections
apt-get install -y -q --no-install-recommends $missing
ensure_user
