#!/bin/bash
# t-metrics: the Prometheus endpoint ("metrics listen ADDR PORT").
#   - a scrape parses (test/promcheck.py: the exposition grammar, HELP and
#     TYPE of every family, no series twice, counters _total) and says
#     what "mxbridgectl stats" says;
#   - "promtool check metrics" (the prometheus package) finds neither an
#     error (rc 1) nor a lint problem (rc 3) in a scrape after mail went
#     through: both fail the test, the exposition being lint-clean;
#   - a message with two recipients through the queue moves queued by 1,
#     delivered by 2 and the incoming sessions by 1; the per-worker
#     series sum to the total;
#   - mxbridge_delivery_delay_seconds (a histogram: promcheck checks its
#     buckets rise and _count is the +Inf bucket) counts the two
#     recipients, its sum moves by about the delay= of their delivery
#     lines; mxbridge_spool_fsync_seconds counts the spool's fsyncs;
#   - the labelled families: mxbridge_sessions_total and _open by
#     direction and path, mxbridge_sessions_ended_total by disposition,
#     mxbridge_nfq_flows_total by direction and action move with that
#     message's session; one more message, over the size limit, moves
#     mxbridge_messages_refused_total{reason="too-big"} (and nothing
#     else there); every session started has ended;
#   - the queue's shape: a message queued while Postfix is down is counted in mxbridge_queue_messages and _recipients
#     {queue="deferred"}, its age in mxbridge_queue_oldest_seconds, its
#     file in mxbridge_spool_bytes, then (slow-after 2) in queue="slow";
#     deleted, every queue is empty again; the group commits of the
#     spool are counted in mxbridge_spool_batch_messages;
#   - a STARTTLS session moves mxbridge_tls_sessions_total{leg="client",
#     protocol="TLSv1.3"} by 1, and every leg's series says what the log's
#     tls= lines say; a message on the live relay moves
#     mxbridge_relay_added_seconds_count by 1;
#   - another path is 404, POST 405, garbage 400, a 64 KiB header 431,
#     pipelined requests get one answer, a slow or idle client is cut off
#     after the request deadline, the 17th connection is closed at once;
#     the daemon lives on;
#   - "metrics allow": a peer outside the list (c1 over IPv4, the box
#     from its bridge address) is closed at accept with no answer and
#     counted in mxbridge_metrics_refused_total, one inside (loopback, c1
#     over IPv6) scrapes; a reload swaps the list in; "mxbridge -n"
#     refuses a bad network;
#   - a reload that moves it warns and keeps it; "mxbridge -n" refuses a
#     bad address; one that cannot be bound stops the start; without the
#     statement nothing listens.
. "$(dirname "$0")/t-mta-common.inc"
command -v promtool >/dev/null ||
	fail "no promtool (package prometheus): sh scripts/install-deps.sh"

MP=9154
PC=$TB_REPO/test/promcheck.py
mconf() {
	mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
$1"
}
scrape() { tb_exec box python3 "$PC" scrape 127.0.0.1 $MP; }
# from NODE HOST: a scrape from NODE to HOST; refused NODE HOST: what a
# GET from there gets
from() { tb_exec "$1" python3 "$PC" scrape "$2" $MP; }
refused() { tb_exec "$1" python3 "$PC" probe "$2" $MP get; }
probe() { tb_exec box python3 "$PC" probe 127.0.0.1 $MP "$1"; }
# val SERIES: its value in the last scrape ($S/m.txt)
val() { awk -v k="$1" '$1 == k { print $2 }' "$S/m.txt"; }

# on every address (v4 peers arrive v4-mapped), loopback and c1's v6 only
ALLOW="metrics allow 127.0.0.1
metrics allow 2001:db8:2::101/128 198.51.100.0/24"
tb_make_cert "$S"
# mail deferred stays so until its second try, 4 s later, makes it slow;
# c1's outgoing sessions are relayed live
MTA_RETRY_MIN=4s MTA_QUEUE_EXTRA="slow-after 2" mconf "metrics listen :: $MP
$ALLOW
limits {
	size 1K
}
tls certificate \"$S/cert.pem\" key \"$S/key.pem\"
starttls incoming offer
honour client-server from $TB_C1_IP4/32"
mta_up
wait_for grep -q "metrics: listening on \[::\]:$MP" "$TB_MXB_LOG" ||
	fail "no metrics listener: $(grep metrics "$TB_MXB_LOG")"

scrape >"$S/m.txt" || fail "first scrape: $(cat "$S/m.txt")"
q0=$(val mxbridge_queued_total) d0=$(val mxbridge_delivered_total)
a0=$(val mxbridge_proxy_accepted_incoming_total)
h0=$(val mxbridge_delivery_delay_seconds_count) hs0=$(val mxbridge_delivery_delay_seconds_sum)
f0=$(val mxbridge_spool_fsync_seconds_count)
# the labelled families (every series there from the start, at 0)
SIM='mxbridge_sessions_total{direction="incoming",path="mta"}'
OIM='mxbridge_sessions_open{direction="incoming",path="mta"}'
EQ='mxbridge_sessions_ended_total{disposition="quit"}'
FIP='mxbridge_nfq_flows_total{direction="incoming",action="proxy"}'
RTB='mxbridge_messages_refused_total{reason="too-big"}'
sim0=$(val "$SIM") eq0=$(val "$EQ") fip0=$(val "$FIP") rtb0=$(val "$RTB")
[ -n "$sim0" ] && [ -n "$eq0" ] && [ -n "$fip0" ] && [ "$rtb0" = 0 ] &&
	[ "$(val "$OIM")" = 0 ] ||
	fail "labelled series missing: $(grep -E '_sessions_|nfq_flows|messages_refused' "$S/m.txt")"
[ -n "$h0" ] && [ -n "$hs0" ] && [ -n "$f0" ] || fail "histograms missing: $(grep -E 'delay|fsync' "$S/m.txt")"
# the queue's shape, TLS, the live relay's latency (there from the start)
QMD='mxbridge_queue_messages{queue="deferred"}'
QRD='mxbridge_queue_recipients{queue="deferred"}'
QOD='mxbridge_queue_oldest_seconds{queue="deferred"}'
QMS='mxbridge_queue_messages{queue="slow"}'
TC3='mxbridge_tls_sessions_total{leg="client",protocol="TLSv1.3"}'
for q in active deferred slow hold; do
	for f in messages recipients oldest_seconds; do
		[ "$(val "mxbridge_queue_$f{queue=\"$q\"}")" = 0 ] ||
			fail "mxbridge_queue_$f{queue=\"$q\"} not 0 at start: $(grep '^mxbridge_queue_' "$S/m.txt")"
	done
done
for l in client server delivery; do
	for p in TLSv1.2 TLSv1.3 other; do
		[ "$(val "mxbridge_tls_sessions_total{leg=\"$l\",protocol=\"$p\"}")" = 0 ] ||
			fail "tls_sessions $l $p not 0 at start: $(grep tls_sessions "$S/m.txt")"
	done
done
[ "$(val mxbridge_spool_bytes)" = 0 ] || fail "spool_bytes at start: $(val mxbridge_spool_bytes)"
ra0=$(val mxbridge_relay_added_seconds_count) b0=$(val mxbridge_spool_batch_messages_count)
[ "$ra0" = 0 ] && [ -n "$b0" ] ||
	fail "relay_added or spool_batch_messages missing: $(grep -E 'relay_added|batch_messages' "$S/m.txt")"
# (promcheck takes a _bucket sample only under TYPE histogram)
grep -q '^mxbridge_delivery_delay_seconds_bucket{le="0.005"} ' "$S/m.txt" ||
	fail "no delivery_delay_seconds buckets: $(grep delay "$S/m.txt")"
[ -n "$q0" ] && [ -n "$d0" ] && [ -n "$a0" ] || fail "counters missing: $(cat "$S/m.txt")"
[ "$(val mxbridge_workers)" = "$(stat_is workers)" ] || fail "workers differ"
grep -q '^mxbridge_queue_messages 0$' "$S/m.txt" || fail "queue_messages: $(grep queue_messages "$S/m.txt")"
grep -q '^mxbridge_worker_proxy_accepted_incoming_total{worker="0"} ' "$S/m.txt" ||
	fail "no per-worker series: $(grep worker_ "$S/m.txt")"
# every key of "stats" is there, under its name
for k in $(ctl stats | sed -n 's/^\([a-z_]*\)=.*/\1/p'); do
	grep -Eq "^mxbridge_${k}(_total)? " "$S/m.txt" || fail "stats key $k not exposed"
done

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,bob@example.com "t-metrics one" ||
	fail "not queued: $(cat "$S/send.out")"
wait_for -t 20 eval '[ "$(stat_is delivered)" -ge $((d0 + 2)) ]' ||
	fail "not delivered: $(ctl stats | grep -E 'delivered|deferred')"
wait_for -t 10 queue_empty || fail "queue not empty"
tb_exec box python3 "$PC" scrape 127.0.0.1 $MP "$S/raw.txt" >"$S/m.txt" ||
	fail "second scrape: $(cat "$S/m.txt")"
# Prometheus's own checker on the same body: exit 1 is a parse error,
# 3 a lint problem (a counter without _total, no help text, camelCase,
# a unit not a base unit...); the exposition has none, so either fails
promtool check metrics <"$S/raw.txt" >"$S/promtool.out" 2>&1 ||
	fail "promtool check metrics (rc $?): $(head -n 5 "$S/promtool.out")"
[ "$(val mxbridge_queued_total)" = $((q0 + 1)) ] ||
	fail "queued_total $(val mxbridge_queued_total), want $((q0 + 1))"
[ "$(val mxbridge_delivered_total)" = $((d0 + 2)) ] ||
	fail "delivered_total $(val mxbridge_delivered_total), want $((d0 + 2))"
[ "$(val mxbridge_proxy_accepted_incoming_total)" = $((a0 + 1)) ] ||
	fail "accepted_incoming $(val mxbridge_proxy_accepted_incoming_total), want $((a0 + 1))"
[ "$(val mxbridge_delivered_total)" = "$(stat_is delivered)" ] || fail "delivered differs from stats"
[ "$(val mxbridge_delivery_delay_seconds_count)" = $((h0 + 2)) ] ||
	fail "delivery_delay_seconds_count $(val mxbridge_delivery_delay_seconds_count), want $((h0 + 2))"
[ "$(val 'mxbridge_delivery_delay_seconds_bucket{le="+Inf"}')" = $((h0 + 2)) ] ||
	fail "delivery_delay_seconds +Inf bucket: $(grep delay_seconds_bucket "$S/m.txt")"
[ "$(val 'mxbridge_delivery_delay_seconds_bucket{le="3600"}')" = $((h0 + 2)) ] ||
	fail "a delivery slower than an hour? $(grep delay_seconds_bucket "$S/m.txt")"
# the sum moved by the delay= of the two delivery lines (rounded there to
# 10 ms below a second: 5 ms each at most)
logged=$(grep -E 'to=<(alice|bob)@example.com>.*disposition=delivered' "$TB_MXB_LOG" |
	sed -n 's/.* delay=\([0-9.]*\) .*/\1/p' | awk '{ n += $1 } END { print n + 0 }')
awk -v a="$hs0" -v b="$(val mxbridge_delivery_delay_seconds_sum)" -v l="$logged" \
	'BEGIN { d = b - a; exit !(d >= 0 && d - l <= 0.0101 && l - d <= 0.0101) }' ||
	fail "delivery_delay_seconds_sum moved $hs0 -> $(val mxbridge_delivery_delay_seconds_sum), delay= lines say $logged"
[ "$(val mxbridge_spool_fsync_seconds_count)" -gt "$f0" ] ||
	fail "no spool fsync observed: $(grep spool_fsync "$S/m.txt")"
# one message (its two recipients) in a group commit: in the first
# bucket or above, never none
[ "$(val mxbridge_spool_batch_messages_count)" -gt "$b0" ] &&
	[ "$(val 'mxbridge_spool_batch_messages_bucket{le="512"}')" = "$(val mxbridge_spool_batch_messages_count)" ] ||
	fail "no group commit observed: $(grep spool_batch_messages "$S/m.txt")"
sum=$(awk '$1 ~ /^mxbridge_worker_proxy_accepted_incoming_total\{/ { n += $2 } END { print n + 0 }' "$S/m.txt")
[ "$sum" = "$(val mxbridge_proxy_accepted_incoming_total)" ] ||
	fail "per-worker accepted sum $sum, total $(val mxbridge_proxy_accepted_incoming_total)"

# the labelled families moved: one session on the queue path, ended by
# QUIT, its flow proxied; then one message over the size limit, refused
# at the dot (a second session)
[ "$(val "$SIM")" = $((sim0 + 1)) ] || fail "$SIM $(val "$SIM"), want $((sim0 + 1))"
[ "$(val "$EQ")" = $((eq0 + 1)) ] || fail "$EQ $(val "$EQ"), want $((eq0 + 1))"
[ "$(val "$OIM")" = 0 ] || fail "$OIM $(val "$OIM") after the session ended"
[ "$(val "$FIP")" = $((fip0 + 1)) ] || fail "$FIP $(val "$FIP"), want $((fip0 + 1))"
[ "$(val "$FIP")" = "$(val mxbridge_nfq_incoming_proxy_total)" ] ||
	fail "$FIP differs from nfq_incoming_proxy_total"
[ "$(val 'mxbridge_sessions_total{direction="incoming",path="relay"}')" = 0 ] ||
	fail "a session counted on the live relay: $(grep sessions_total "$S/m.txt")"
SEND_RECEIVED=20 send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-metrics big" &&
	fail "a message over the size limit was queued"
grep -q "^ERR 552" "$S/send.out" || fail "the big message: $(cat "$S/send.out")"
scrape >"$S/m.txt" || fail "scrape: $(cat "$S/m.txt")"
[ "$(val "$RTB")" = 1 ] || fail "$RTB $(val "$RTB"), want 1: $(grep messages_refused "$S/m.txt")"
[ "$(awk '$1 ~ /^mxbridge_messages_refused_total\{/ { n += $2 } END { print n + 0 }' "$S/m.txt")" = 1 ] ||
	fail "another reason counted: $(grep messages_refused "$S/m.txt")"
[ "$(val "$SIM")" = $((sim0 + 2)) ] || fail "$SIM $(val "$SIM"), want $((sim0 + 2))"
wait_for eval 'scrape >"$S/m.txt" && [ "$(val "$EQ")" = $((eq0 + 2)) ]' ||
	fail "$EQ $(val "$EQ"), want $((eq0 + 2)): $(grep sessions_ended "$S/m.txt")"
# every session started has ended, by one disposition or another
ended=$(awk '$1 ~ /^mxbridge_sessions_ended_total\{/ { n += $2 } END { print n + 0 }' "$S/m.txt")
started=$(awk '$1 ~ /^mxbridge_sessions_total\{/ { n += $2 } END { print n + 0 }' "$S/m.txt")
[ "$ended" = "$started" ] || fail "sessions started $started, ended $ended"
grep -q '^mxbridge_sessions_ended_total{disposition="other"} 0$' "$S/m.txt" ||
	fail "a disposition not named: $(grep sessions_ended "$S/m.txt")"

# the queue's shape: a message queued while the server is down
tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"
send c1 "$TB_SRV_IP4" sender@example.org carol@example.com "t-metrics deferred" ||
	fail "not queued: $(cat "$S/send.out")"
did=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$did" ] || fail "no queue id: $(cat "$S/send.out")"
# deferred after its first try, and a second old at least
wait_for -t 15 eval 'scrape >"$S/m.txt" && [ "$(val "$QMD")" = 1 ] && [ "$(val "$QOD")" -gt 0 ]' ||
	fail "not deferred with an age: $(grep '^mxbridge_queue_' "$S/m.txt"; ctl queue list)"
[ "$(val "$QRD")" = 1 ] || fail "$QRD $(val "$QRD"), want 1"
[ "$(val mxbridge_queue_messages)" = 1 ] || fail "queue_messages $(val mxbridge_queue_messages), want 1"
[ "$(val "$QOD")" -le 15 ] || fail "$QOD $(val "$QOD"): older than the test"
size=$(stat -c %s "$S/spool/queue/$did") || fail "no spool file for $did"
[ "$(val mxbridge_spool_bytes)" = "$size" ] ||
	fail "spool_bytes $(val mxbridge_spool_bytes), the file has $size"
ctl queue list | grep -q "to=<carol@example.com> .*queue=deferred" ||
	fail "queue list does not say deferred: $(ctl queue list)"
# its second try failed too: the slow queue's
wait_for -t 20 eval 'scrape >"$S/m.txt" && [ "$(val "$QMS")" = 1 ] && [ "$(val "$QMD")" = 0 ]' ||
	fail "not slow after two tries: $(grep '^mxbridge_queue_' "$S/m.txt"; ctl queue list)"
[ "$(val 'mxbridge_queue_oldest_seconds{queue="slow"}')" -gt 0 ] ||
	fail "slow oldest: $(grep '^mxbridge_queue_oldest' "$S/m.txt")"
ctl queue delete "$did" >/dev/null || fail "queue delete $did"
tb_postfix start >/dev/null 2>&1 || fail "postfix did not start"
wait_for eval 'scrape >"$S/m.txt" && [ "$(val mxbridge_spool_bytes)" = 0 ] && [ "$(val mxbridge_queue_messages)" = 0 ]' ||
	fail "the queue not empty after the delete: $(grep -E '^mxbridge_(queue|spool_bytes)' "$S/m.txt")"
[ "$(awk '$1 ~ /^mxbridge_queue_(messages|recipients|oldest_seconds)\{/ { n += $2 } END { print n + 0 }' "$S/m.txt")" = 0 ] ||
	fail "a queue not empty: $(grep '^mxbridge_queue_' "$S/m.txt")"

# a STARTTLS session on the queue path: the client leg, TLSv1.3
tc0=$(val "$TC3")
tb_chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test" STARTTLS "EHLO c1.test" QUIT >"$S/chat.out" ||
	fail "STARTTLS session: $(cat "$S/chat.out")"
grep -q '^220 ' "$S/chat.out" && grep -q '^221 ' "$S/chat.out" || fail "STARTTLS session: $(cat "$S/chat.out")"
wait_for eval 'scrape >"$S/m.txt" && [ "$(val "$TC3")" = $((tc0 + 1)) ]' ||
	fail "$TC3 $(val "$TC3"), want $((tc0 + 1)): $(grep tls_sessions "$S/m.txt")"
# a message on the live relay: c1 to the outside sink
sro0=$(val 'mxbridge_sessions_total{direction="outgoing",path="relay"}')
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "t-metrics relayed" ||
	fail "not relayed: $(cat "$S/send.out")"
wait_for log_has "to=<rcpt@example.net> nrcpt=1 size=[0-9]+ disposition=relayed" ||
	fail "no relayed line: $(grep disposition= "$TB_MXB_LOG" | tail -n 2)"
scrape >"$S/m.txt" || fail "scrape: $(cat "$S/m.txt")"
[ "$(val 'mxbridge_sessions_total{direction="outgoing",path="relay"}')" = $((sro0 + 1)) ] ||
	fail "the message was not on the live relay: $(grep sessions_total "$S/m.txt")"
[ "$(val mxbridge_relay_added_seconds_count)" = $((ra0 + 1)) ] &&
	[ "$(val 'mxbridge_relay_added_seconds_bucket{le="+Inf"}')" = $((ra0 + 1)) ] ||
	fail "relay_added_seconds: $(grep relay_added "$S/m.txt")"
[ "$(val 'mxbridge_relay_added_seconds_bucket{le="60"}')" = $((ra0 + 1)) ] ||
	fail "relay_added over a minute? $(grep relay_added "$S/m.txt")"
# every leg says what its tls= lines say (the outside sink and Postfix
# offer no STARTTLS: those legs stay 0, the client's counts one)
tls_lines() {	# LEG PROTOCOL: the log's handshakes of LEG
	local pre
	case $1 in
	client) pre=' dir=(incoming|outgoing) tls=' ;;
	server) pre=' session=[0-9]+ upstream=[^ ]+ tls=' ;;
	delivery) pre=' mta: conn=[0-9]+ upstream=[^ ]+ tls=' ;;
	esac
	grep -Ec -- "$pre${2//./\\.}/" "$TB_MXB_LOG"
}
for l in client server delivery; do
	for p in TLSv1.2 TLSv1.3; do
		[ "$(val "mxbridge_tls_sessions_total{leg=\"$l\",protocol=\"$p\"}")" = "$(tls_lines $l $p)" ] ||
			fail "tls_sessions $l $p: $(val "mxbridge_tls_sessions_total{leg=\"$l\",protocol=\"$p\"}"), the log has $(tls_lines $l $p)"
	done
	[ "$(val "mxbridge_tls_sessions_total{leg=\"$l\",protocol=\"other\"}")" = 0 ] ||
		fail "tls_sessions $l other: $(grep tls_sessions "$S/m.txt")"
done
# and the same body passes promtool with every new family in it
tb_exec box python3 "$PC" scrape 127.0.0.1 $MP "$S/raw2.txt" >"$S/m.txt" ||
	fail "scrape: $(cat "$S/m.txt")"
promtool check metrics <"$S/raw2.txt" >"$S/promtool.out" 2>&1 ||
	fail "promtool check metrics (rc $?): $(head -n 5 "$S/promtool.out")"
for f in queue_messages queue_recipients queue_oldest_seconds spool_bytes \
    spool_batch_messages relay_added_seconds tls_sessions_total; do
	grep -q "^# TYPE mxbridge_$f " "$S/raw2.txt" && grep -q "^# HELP mxbridge_$f " "$S/raw2.txt" ||
		fail "no HELP or TYPE for mxbridge_$f"
done

# wrong and hostile requests
expect_glob "another path" "$(probe path)" 404
expect_glob "POST" "$(probe post)" 405
expect_glob "garbage" "$(probe garbage)" 400
expect_glob "a 64 KiB header" "$(probe huge)" 431
expect_glob "pipelined requests" "$(probe pipelined)" 200
expect_glob "half a request line" "$(probe slow)" "closed [4-7]"
expect_glob "an idle connection" "$(probe idle)" "closed [4-7]"
expect_glob "the 17th connection" "$(probe cap)" "closed 0"
scrape >/dev/null || fail "no scrape after the hostile requests"
mxb_running || fail "the daemon died"

# "metrics allow": outsiders are closed at accept, without an answer
scrape >"$S/m.txt" || fail "scrape: $(cat "$S/m.txt")"
r0=$(val mxbridge_metrics_refused_total)
[ "$r0" = 0 ] || fail "metrics_refused_total before any refusal: '$r0'"
expect_glob "c1 over IPv4, not allowed" "$(refused c1 "$TB_BOX_IP4")" closed
expect_glob "the box from its bridge address" "$(refused box "$TB_BOX_IP4")" closed
expect_glob "an idle outsider" "$(tb_exec c1 python3 "$PC" probe "$TB_BOX_IP4" $MP idle)" "closed 0"
from c1 "$TB_BOX_IP6" >"$S/m6.txt" || fail "c1 over IPv6 (allowed): $(cat "$S/m6.txt")"
scrape >"$S/m.txt" || fail "scrape: $(cat "$S/m.txt")"
[ "$(val mxbridge_metrics_refused_total)" = 3 ] ||
	fail "metrics_refused_total $(val mxbridge_metrics_refused_total), want 3"
[ "$(stat_is metrics_refused)" = 3 ] || fail "stats metrics_refused: $(stat_is metrics_refused)"
log_has "metrics: connection from $TB_C1_IP4:[0-9]* refused: not in metrics allow" ||
	fail "no refusal logged: $(grep 'metrics:' "$TB_MXB_LOG" | tail -n 3)"
# a reload swaps the list: now c1's v4 network only
mconf "metrics listen :: $MP
metrics allow 192.0.2.96/28"
ctl reload >/dev/null || fail "reload with a new allow list refused"
wait_for eval '[ "$(grep -c "reload: configuration=" "$TB_MXB_LOG")" -ge 1 ]' || fail "no reload"
expect_glob "loopback after the reload" "$(refused box 127.0.0.1)" closed
from c1 "$TB_BOX_IP4" >"$S/m.txt" || fail "c1 over IPv4 after the reload: $(cat "$S/m.txt")"
[ "$(val mxbridge_metrics_refused_total)" = 4 ] ||
	fail "metrics_refused_total $(val mxbridge_metrics_refused_total) after the reload, want 4"
mconf "metrics listen :: $MP"
ctl reload >/dev/null || fail "reload without an allow list refused"
wait_for eval '[ "$(grep -c "reload: configuration=" "$TB_MXB_LOG")" -ge 2 ]' || fail "no second reload"
scrape >/dev/null || fail "loopback without an allow list"

# a reload may not move it: a warning, the old one stays
mconf "metrics listen 127.0.0.1 $((MP + 1))"
ctl reload >/dev/null || fail "reload refused"
wait_for log_has "reload: metrics listener changes need a restart" || fail "no reload warning"
scrape >/dev/null || fail "the listener did not stay"

# the check refuses a name or a bad port
mconf "metrics listen localhost $MP"
out=$(tb_exec box "$BIN/mxbridge" -n -f "$S/run.conf" 2>&1) && fail "-n took a host name"
echo "$out" | grep -q 'metrics listen: "localhost" is not an IPv4 or IPv6 address' ||
	fail "-n said: $out"
mconf "metrics listen ::1 0"
tb_exec box "$BIN/mxbridge" -n -f "$S/run.conf" >/dev/null 2>&1 && fail "-n took port 0"
mconf "metrics listen ::1 $MP
metrics allow 127.0.0.1 192.0.2.0/33"
out=$(tb_exec box "$BIN/mxbridge" -n -f "$S/run.conf" 2>&1) && fail "-n took a /33"
echo "$out" | grep -q 'metrics allow: "192.0.2.0/33" is not an IPv4 or IPv6 address or ADDRESS/PREFIX network' ||
	fail "-n said: $out"

# a listener that cannot be bound: the daemon does not start
mta_down
mconf "metrics listen 192.0.2.254 $MP"
mxb_start "$S/run.conf" -v >/dev/null 2>&1
wait_for log_has "metrics: listen 192.0.2.254:$MP: " || fail "no bind error: $(tail -n 3 "$TB_MXB_LOG")"
wait_for eval '! mxb_running' || fail "started without its metrics listener"
mxb_stop

# not configured: nothing listens
mconf ""
mta_up
expect_glob "without the statement" "$(probe path)" refused
log_has "metrics: listening" && [ "$(grep -c 'metrics: listening' "$TB_MXB_LOG")" -gt 1 ] &&
	fail "a listener without the statement"
mta_down
pass "scrape parses and counts; allow list closes outsiders at accept, counted, swapped by reload; 404 405 400 431; slow, idle and surplus connections cut; reload keeps it; off by default"
