#!/bin/bash
# t-dns-hostile: DNS answers a resolver client must survive (issue 18),
# served by test/fakedns.py on out (192.0.2.54, the box's resolver for
# this test; other names are forwarded to the testbed's dnsmasq).  Mail
# leaves through the MTA by MX route:
#   - six domains whose DNS never answers, then a good domain: the good
#     one is delivered while the six are still being resolved (one
#     resolution per domain, 16 threads), and the six are deferred with
#     4.4.3 once dns-timeout has passed;
#   - one message per hostile answer: A RDLENGTH 0 (this aborted the
#     daemon), CNAME loop, another id, QR missing, a cut answer, a
#     compression loop, SERVFAIL: deferred 4.4.3; null MX: bounced 5.1.10;
#     MX names that are addresses: 5.4.4; records for another name only,
#     NXDOMAIN: 5.1.2; a CNAME chain, 1500 MX records, an answer truncated
#     over UDP and whole over TCP: delivered;
#   - the daemon is the same process throughout, and a message to a good
#     domain sent after all that is delivered.
. "$(dirname "$0")/t-mta-common.inc"

FAKE_IP=192.0.2.54
RESOLV=/etc/netns/$(tb_ns box)/resolv.conf

ip -n "$(tb_ns out)" addr add "$FAKE_IP/24" dev eth0 ||
	fail "cannot add $FAKE_IP on out"
tb_exec out python3 "$TB_REPO/test/fakedns.py" --addr "$FAKE_IP" \
	--forward "$TB_DNS_IP4" >"$S/fakedns.out" 2>&1 &
echo $! >"$TB_STATE/pids/out.fakedns.pid"	# testbed down ends it too
FAKE_PID=$!
wait_for grep -q listening "$S/fakedns.out" ||
	fail "fakedns did not start: $(cat "$S/fakedns.out")"
echo "nameserver $FAKE_IP" >"$RESOLV"

mta_conf
sed -i 's/^\tfsync .*/&\n\tdns-timeout 20s\n\tresolve-timeout 30s\n\tmax-addresses 5/' "$S/run.conf"
mta_up
PID=$(tr -dc 0-9 <"$TB_MXB_PIDFILE")

# one slow domain must not hold the others back
for i in 1 2 3 4 5 6; do
	send c1 "$TB_EXT_IP4" sender@example.org "user@slow$i.test" "t-dns slow$i" ||
		fail "slow$i: not accepted: $(cat "$S/send.out")"
done
send c1 "$TB_EXT_IP4" sender@example.org user@good.test "t-dns good1" ||
	fail "good1: not accepted: $(cat "$S/send.out")"
wait_for -t 15 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-dns good1")" ]' ||
	fail "good domain not delivered while slow ones resolve: $(grep -E 'good.test|slow' "$TB_MXB_LOG" | tail -n 4)"
log_has "to=<user@good.test> .*relay=mx.good.test\[192.0.2.21\] route=mx .*disposition=delivered" ||
	fail "no delivered line for good.test"
# it did not wait for a slow domain's resolution: its delay= (queued to
# delivered) is far below the dns-timeout (20 s) a slow one takes.  Not
# "no slow domain deferred yet": on a loaded machine sending the seven
# messages may itself take longer than the timeout.
good_delay=$(grep 'to=<user@good.test> .*disposition=delivered' "$TB_MXB_LOG" |
	sed -n 's/.* delay=\([0-9.]*\) .*/\1/p' | head -n 1)
[ -n "$good_delay" ] && awk -v d="$good_delay" 'BEGIN { exit !(d < 10) }' ||
	fail "the good domain waited for the slow ones: delay=${good_delay:-?}"

# the hostile answers: DOMAIN OUTCOME
expect="a0 deferred:4.4.3
loop deferred:4.4.3
badid deferred:4.4.3
noqr deferred:4.4.3
short deferred:4.4.3
compress deferred:4.4.3
servfail deferred:4.4.3
nullmx bounced:5.1.10
ipmx bounced:5.4.4
other bounced:5.1.2
nx bounced:5.1.2
chain delivered
many delivered
tc delivered"
while read -r d _; do
	send c1 "$TB_EXT_IP4" sender@example.org "user@$d.test" "t-dns $d" ||
		fail "$d: not accepted: $(cat "$S/send.out")"
done <<<"$expect"
while read -r d out; do
	case $out in
	delivered)
		wait_for -t 30 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-dns $d\$")" ]' ||
			fail "$d: not delivered: $(grep "@$d.test" "$TB_MXB_LOG" | tail -n 2)" ;;
	*)
		re="to=<user@$d.test> .*dsn=${out#*:} .*disposition=${out%%:*}"
		wait_for -t 30 log_has "$re" ||
			fail "$d: want ${out%%:*} ${out#*:}, got: $(grep "@$d.test" "$TB_MXB_LOG" | tail -n 1)$(mxb_running || echo " (the daemon died)")" ;;
	esac
	[ "$(tr -dc 0-9 <"$TB_MXB_PIDFILE")" = "$PID" ] && mxb_running ||
		fail "$d: the daemon died: $(tail -n 3 "$TB_MXB_LOG")"
done <<<"$expect"
log_has "relay=mx.chain.test\[192.0.2.21\]" || fail "chain: not through the CNAME's MX"

# the null MX bounce reaches the sender
wait_for -t 20 eval '[ -n "$(sink_file "$TB_MX_DIR" "Final-Recipient: rfc822; user@nullmx.test")" ]' ||
	fail "no DSN for the null MX recipient"

# and mail still flows
send c1 "$TB_EXT_IP4" sender@example.org user@good.test "t-dns good2" ||
	fail "good2: not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-dns good2")" ]' ||
	fail "good2 not delivered after the hostile answers"

# the slow domains end at their deadline, deferred
for i in 1 2 3 4 5 6; do
	wait_for -t 45 log_has "to=<user@slow$i.test> .*dsn=4.4.3 .*disposition=deferred" ||
		fail "slow$i: not deferred: $(grep "slow$i" "$TB_MXB_LOG" | tail -n 1)"
done
[ "$(tr -dc 0-9 <"$TB_MXB_PIDFILE")" = "$PID" ] && mxb_running ||
	fail "the daemon died"
# each resolution counted by its result (mxbridge_dns_lookups_total):
# good, good2, chain, many, tc found; other, nx not found; nullmx; ipmx
# unusable; the six slow and seven hostile ones temporary failures
st=$(ctl stats) || fail "mxbridgectl stats failed"
for want in "ok -ge 5" "notfound -ge 2" "nullmx -ge 1" "unusable -ge 1" "tempfail -ge 13"; do
	set -- $want
	v=$(printf '%s\n' "$st" | sed -n "s/^dns_lookups\.mx\.$1=//p")
	[ -n "$v" ] && [ "$v" "$2" "$3" ] ||
		fail "stats dns_lookups.mx.$1=$v, want $2 $3: $(printf '%s\n' "$st" | grep dns_lookups | tr '\n' ' ')"
done

mta_down
kill "$FAKE_PID" 2>/dev/null
wait "$FAKE_PID" 2>/dev/null
pass "hostile DNS answers deferred or bounced as the RFCs say, daemon up, slow domains hold nobody back"
