#!/bin/bash
# t-policy-dualstack: a protected domain whose server is given as two
# addresses, "server 192.0.2.10 2001:db8:2::10" (srv's IPv4 and IPv6):
#   - mxbridge -n takes it; a session from c1 to either address is
#     intercepted as incoming for example.com;
#   - each message is delivered in the family it was dialled on: Postfix
#     sees the box connect from 192.0.2.2 for the IPv4 session and from
#     2001:db8:2::2 for the IPv6 one;
#   - with srv's IPv4 port 25 down (a reset from srv's own firewall), a
#     message dialled to the IPv4 address goes to the IPv6 one, and the
#     other way round: the failed address is logged, the mail delivered.
. "$(dirname "$0")/t-mta-common.inc"
need ip6tables

mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 $TB_SRV_IP6
}"
out=$(tb_exec box "$BIN/mxbridge" -n -f "$S/run.conf" 2>&1) ||
	fail "mxbridge -n refused the dual-stack server: $out"
mta_up

# delivered_from SUBJECT: the address Postfix saw the message come from
# (its own Received: field, the first of the header)
delivered_from() {
	local f
	f=$(grep -rlx -e "Subject: $1" -e "Subject: $1"$'\r' "$TB_MAILDIR/alice/new" \
		"$TB_MAILDIR/alice/cur" 2>/dev/null | head -n 1)
	[ -n "$f" ] || return 1
	sed -n '/^Received: /{p;q}' "$f" | sed -n 's/.*(unknown \[\(IPv6:\)\{0,1\}\([^]]*\)\]).*/\2/p'
}
# one DST SUBJECT WANT-FROM: c1 sends SUBJECT to alice at DST; it is
# delivered, and Postfix got it from WANT-FROM
one() {
	send c1 "$1" sender@example.org alice@example.com "$2" ||
		fail "$2: not accepted: $(cat "$S/send.out")"
	wait_for -t 20 maildir_grep alice "^Subject: $2" ||
		fail "$2: not delivered: $(grep -E 'msgid=|mta:' "$TB_MXB_LOG" | tail -n 3)"
	got=$(delivered_from "$2")
	[ "$got" = "$3" ] || fail "$2: Postfix got it from '$got', want $3"
}
# incoming ADDR: a session to ADDR:25 was classified incoming
incoming() {
	log_has "session=[0-9]+ client=[^ ]+ orig_dst=$1:25 dir=incoming" ||
		fail "no incoming session to $1: $(grep 'session=.*orig_dst' "$TB_MXB_LOG" | tail -n 2)"
}

# 1. both families intercepted, each delivered in its own family
one "$TB_SRV_IP4" "dualstack v4" "$TB_BOX_IP4"
incoming "$TB_SRV_IP4"
one "$TB_SRV_IP6" "dualstack v6" "$TB_BOX_IP6"
incoming "\[$TB_SRV_IP6\]"
log_has "to=<alice@example.com> .*relay=\[$TB_SRV_IP6\] route=original .*disposition=delivered" ||
	fail "the IPv6 delivery is not logged with relay=[$TB_SRV_IP6]"
# the box's own Received: names the IPv6 client as an RFC 5321 address
# literal, [IPv6:...]
f=$(grep -rlx -e "Subject: dualstack v6" -e "Subject: dualstack v6"$'\r' \
	"$TB_MAILDIR/alice/new" "$TB_MAILDIR/alice/cur" 2>/dev/null | head -n 1)
grep -q "^Received: from [^ ]* (\[IPv6:$TB_C1_IP6\])" "$f" ||
	fail "the box's Received: lacks [IPv6:$TB_C1_IP6]: $(grep -A1 '^Received: from' "$f" | head -n 6)"

# 2. srv's IPv4 SMTP down: the IPv4 session's mail goes over IPv6
tb_exec srv iptables -I INPUT -p tcp -d "$TB_SRV_IP4" --dport 25 -j REJECT --reject-with tcp-reset ||
	fail "iptables in srv"
one "$TB_SRV_IP4" "dualstack v4 down" "$TB_BOX_IP6"
log_has "mta: conn=[0-9]+ dest=original:$TB_SRV_IP4:25 relay=\[$TB_SRV_IP4\] failed" ||
	fail "the refused IPv4 address is not logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 2)"
tb_exec srv iptables -D INPUT -p tcp -d "$TB_SRV_IP4" --dport 25 -j REJECT --reject-with tcp-reset

# 3. and the other way round: IPv6 down, the IPv6 session's mail over IPv4
tb_exec srv ip6tables -I INPUT -p tcp -d "$TB_SRV_IP6" --dport 25 -j REJECT --reject-with tcp-reset ||
	fail "ip6tables in srv"
one "$TB_SRV_IP6" "dualstack v6 down" "$TB_BOX_IP4"
log_has "mta: conn=[0-9]+ dest=original:\[$TB_SRV_IP6\]:25 relay=\[$TB_SRV_IP6\] failed" ||
	fail "the refused IPv6 address is not logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 2)"
wait_for queue_empty || fail "the queue is not empty: $(ctl queue 2>&1 | head -n 3)"

mta_down
pass "server with an IPv4 and an IPv6 address: both intercepted, each delivered in its family, the other family when one is down"
