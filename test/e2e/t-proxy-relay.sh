#!/bin/bash
# t-proxy-relay: the outgoing live relay (client-chosen server honoured).
#   - swaks from c1 to the sink 192.0.2.20 across the bridge: delivered,
#     the sink's own greeting and replies are what swaks sees;
#   - the EHLO capabilities are cut to what both legs support;
#   - pipelined commands get their replies in order;
#   - upstream down: swaks fails at once (421 4.4.1), nothing is queued,
#     nothing is retried;
#   - upstream lost in the middle of DATA: the client sees the failure,
#     nothing is queued;
#   - the sessions are counted on the relay path (stats sessions.DIR.PATH)
#     and every one ended by a disposition of its own name.
. "$(dirname "$0")/t-proxy-common.inc"

proxy_conf
proxy_up

# 1. delivered, with the upstream's replies
n0=$(sink_count "$TB_EXT_DIR")
tb_swaks c1 --server "$TB_EXT_IP4" -f sender@example.org -t rcpt@example.net \
	--header "Subject: t-proxy-relay live" ||
	fail "swaks through the live relay: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
grep -q '^<-  220 ext.example.net ESMTP' "$TB_STATE/swaks.out" ||
	fail "the client did not see the upstream's greeting: $(grep -m1 '^<-' "$TB_STATE/swaks.out")"
grep -q '^<-  221 Bye' "$TB_STATE/swaks.out" || fail "the upstream's 221 not relayed"
wait_for sink_count "$TB_EXT_DIR" -gt "$n0" || fail "message not at the sink"
grep -rqs "t-proxy-relay live" "$TB_EXT_DIR" || fail "message content not at the sink"
log_has "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_EXT_IP4:25 dir=outgoing path=relay" ||
	fail "no relay session logged"
log_has "from=<sender@example.org> to=<rcpt@example.net> nrcpt=1 size=[0-9]+ disposition=relayed" ||
	fail "no relayed message line: $(grep disposition= "$TB_MXB_LOG" | tail -n 2)"
[ "$(spool_files)" = 0 ] || fail "the live relay queued something"
# counted on its path, ended by its QUIT (stats: sessions.DIR.PATH,
# sessions_ended.DISPOSITION)
mxb_ctl stats >"$S/stats.txt"
grep -qx "sessions.outgoing.relay=1" "$S/stats.txt" && grep -qx "sessions.outgoing.mta=0" "$S/stats.txt" ||
	fail "the session not counted on the relay path: $(grep '^sessions' "$S/stats.txt")"
wait_for eval 'mxb_ctl stats | grep -qx "sessions_ended.quit=1"' ||
	fail "the session's end not counted: $(mxb_ctl stats | grep '^sessions_ended')"

# 2. capabilities: only what both legs support
fake_up --mode caps
tb_exec c1 swaks --server "$FAKE_IP" --quit-after EHLO --helo c1.test \
	>"$S/ehlo.out" 2>&1 || fail "EHLO to the fake upstream: $(tail -n 2 "$S/ehlo.out")"
grep -q '^<-  250-fake.upstream greets you' "$S/ehlo.out" ||
	fail "the upstream's EHLO greeting line is not relayed"
for k in PIPELINING 8BITMIME ENHANCEDSTATUSCODES DSN SMTPUTF8 'SIZE 10240000'; do
	grep -Eq "^<-  250[- ]$k\$" "$S/ehlo.out" || fail "capability $k dropped: $(cat "$S/ehlo.out")"
done
for k in CHUNKING BINARYMIME XCLIENT ETRN X-SECRET AUTH STARTTLS; do
	grep -Eq "^<-  250[- ]$k" "$S/ehlo.out" && fail "capability $k passed through"
done

# 3. pipelining: replies in order, a local 501 among upstream replies
fake_up
hostile "$FAKE_IP" pipeline
wait_for sink_count "$S/fake" -ge 1 || fail "pipelined message not at the fake upstream"

# 4. upstream down: at once, nothing queued, no retry
fake_down
t0=$(date +%s%N)
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net &&
	fail "swaks succeeded with the upstream down"
t1=$(date +%s%N)
grep -q '^<\*\* *421 4.4.1' "$TB_STATE/swaks.out" ||
	fail "no 421 4.4.1 for an unreachable upstream: $(grep -m2 '^<' "$TB_STATE/swaks.out")"
[ $(((t1 - t0) / 1000000)) -lt 3000 ] || fail "the failure took $(((t1 - t0) / 1000000)) ms"
log_has "orig_dst=$FAKE_IP:25 dir=outgoing upstream=$FAKE_IP:25 disposition=upstream-unreachable" ||
	fail "unreachable upstream not logged"
fake_up
sleep 3
grep -q '^accept' "$S/fake.log" && fail "the proxy retried: $(cat "$S/fake.log")"
[ "$(spool_files)" = 0 ] || fail "something was queued for the unreachable upstream"

# 5. upstream lost in the middle of DATA
fake_up --mode dropdata
n0=$(sink_count "$S/fake")
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net &&
	fail "swaks succeeded although the upstream dropped in DATA"
grep -Eq '^(<\*\* *421 4.4.2|\*\*\* Remote host closed)' "$TB_STATE/swaks.out" ||
	fail "the client did not see the loss: $(grep -m3 -E '^(<|\*)' "$TB_STATE/swaks.out" | tail -n 2)"
log_has "disposition=upstream-lost" || fail "lost upstream not logged"
# the message's line names the 421 the client got, enhanced code and all
log_has "to=<rcpt@example.net> nrcpt=1 .*disposition=tempfail .*reply=\"421 4\.4\.2 gw\.example\.com Error: connection to upstream server lost\"" ||
	fail "mid-DATA loss not logged with the 421 4.4.2 sent: $(grep 'disposition=tempfail' "$TB_MXB_LOG" | tail -n 1)"
[ "$(sink_count "$S/fake")" = "$n0" ] || fail "a message arrived although the upstream dropped"
[ "$(spool_files)" = 0 ] || fail "something was queued after the upstream dropped"
fake_down

# 6. the client leg's packets: the EHLO is acknowledged by its reply (no
# quick ACK of its own first), and the 221 carries the FIN
ip netns exec "$(tb_ns c1)" tcpdump -i eth0 -nn -U --immediate-mode -w "$S/leg.pcap" "tcp port 25" \
	>"$S/tcpdump.log" 2>&1 &
tdpid=$!
tbd_record_pid c1 tcpdump "$tdpid"
wait_for grep -q "listening on" "$S/tcpdump.log" || fail "tcpdump did not start: $(cat "$S/tcpdump.log")"
tb_swaks c1 --server "$TB_EXT_IP4" -f sender@example.org -t rcpt@example.net ||
	fail "swaks for the packet check: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
sleep 0.5
kill -INT "$tdpid"; wait "$tdpid"
fin=$(tcpdump -r "$S/leg.pcap" -nn 'src port 25 and tcp[tcpflags] & tcp-fin != 0 and
	ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) > 0' 2>/dev/null | wc -l)
[ "$fin" = 1 ] || fail "the final reply and the FIN are not one segment ($fin): $(tcpdump -r "$S/leg.pcap" -nn 2>&1 | tail -n 4) $(cat "$S/tcpdump.log")"
# -q: "IP A.p > B.25: tcp LEN"; after the client's first data (EHLO), the
# box's next packet must carry data (the reply), not a bare ACK
after=$(tcpdump -r "$S/leg.pcap" -nn -q 2>/dev/null | awk -v c="$TB_C1_IP4." '
	{ len = $NF + 0; cli = index($3, c) == 1 }
	cli && len > 0 && !seen { seen = 1; next }
	seen && !cli { print len; exit }')
[ -n "$after" ] && [ "$after" -gt 0 ] ||
	fail "the EHLO got a bare ACK before its reply: $(tcpdump -r "$S/leg.pcap" -nn -q 2>/dev/null | head -n 8)"

# every session has ended, each by a disposition of its own name
statsum() { mxb_ctl stats | awk -F= -v k="$1" 'index($1, k) == 1 { n += $2 } END { print n + 0 }'; }
wait_for eval '[ "$(statsum sessions_ended.)" = "$(statsum sessions.)" ]' ||
	fail "sessions started $(statsum sessions.), ended $(statsum sessions_ended.)"
mxb_ctl stats | grep -qx "sessions_ended.other=0" ||
	fail "a disposition not named: $(mxb_ctl stats | grep '^sessions_ended' | grep -v '=0$')"
mxb_down
pass "live relay: delivered with real replies, EHLO filtered, pipelining, unreachable and lost upstream, reply+FIN in one segment"
