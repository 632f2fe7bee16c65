#!/usr/bin/env bash
# shellcheck disable=SC2119,SC2317
# The testbed DNS (dnsmasq on out, 192.0.2.53) answers the appliance's
# queries through /etc/netns/<box>/resolv.conf.
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"
tb_init

grep -q "^nameserver $TB_DNS_IP4\$" "/etc/netns/$(tb_ns box)/resolv.conf" ||
	fail "no /etc/netns resolv.conf for the box"
[ "$(tb_exec box cat /etc/resolv.conf)" = "nameserver $TB_DNS_IP4" ] ||
	fail "box namespace does not see the testbed resolv.conf"

# expect NODE TYPE NAME WANT: answers (sorted, space-joined) must equal WANT
expect() {
	local got
	got=$(tb_dig "$1" "$2" "$3") || fail "$2 $3: query failed (rc $?)"
	got=$(printf '%s\n' "$got" | sort | tr '\n' ' ' | sed 's/^ *//; s/ *$//')
	[ "$got" = "$4" ] || fail "$2 $3: got '$got', want '$4'"
}
expect box MX example.net "10 mx.example.net."
expect box A mx.example.net "$TB_MX_IP4"
expect box MX example.com "10 mx.example.com."
expect box A mx.example.com "$TB_SRV_IP4"
expect box AAAA mx.example.com "$TB_SRV_IP6"
expect box A ext.example.net "$TB_EXT_IP4"
expect box A relay.example.org "$TB_RELAY_IP4"
# implicit MX: example.org has no MX (NODATA) but an A record
expect box MX example.org ""
expect box A example.org "$TB_MX_IP4"
# nothing else exists in the test zones
tb_dig box A nosuch.example.net >/dev/null 2>&1
[ $? = 2 ] || fail "nosuch.example.net is not NXDOMAIN"
tb_dig box MX nosuch.example.com >/dev/null 2>&1
[ $? = 2 ] || fail "MX nosuch.example.com is not NXDOMAIN"

# cross-check with a real resolver tool through resolv.conf when present
if command -v drill >/dev/null 2>&1; then
	got=$(tb_exec box drill -Q MX example.net 2>/dev/null)
	[ "$got" = "10 mx.example.net." ] || fail "drill MX example.net: got '$got'"
elif command -v dig >/dev/null 2>&1; then
	got=$(tb_exec box dig +short MX example.net 2>/dev/null)
	[ "$got" = "10 mx.example.net." ] || fail "dig MX example.net: got '$got'"
fi
# and the libc resolver (getaddrinfo via resolv.conf)
got=$(tb_exec box getent ahostsv4 mx.example.net 2>/dev/null | awk 'NR==1{print $1}')
[ "$got" = "$TB_MX_IP4" ] || fail "getent ahostsv4 mx.example.net: got '$got'"

pass "MX/A/AAAA, implicit MX and NXDOMAIN answered from the box"
