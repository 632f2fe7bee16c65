#!/bin/bash
# t-ctl-logsummary: "mxbridgectl log-summary" over the test daemon's own
# log, after a known mix of mail:
#   - M1 (a@example.org to alice) deferred once (Postfix down), delivered
#     after a restart;
#   - M2 (b@example.org to bob) deferred once, then made 2 hours old in
#     the spool with a lifetime of 1h: expired at the restart, its DSN
#     delivered to example.org's MX;
#   - M3 (sender@example.org to alice, bob and nobody): two delivered,
#     nobody bounced (550 unknown user), its DSN delivered;
#   - M4 over the size limit: refused at the dot (552), nothing queued.
# The counts are asserted exactly: 3 received, 5 delivered (2 DSNs), 2
# deferred (2 deferrals), 1 bounced, 1 expired, 1 rejected, 2 DSNs, the bytes
# from the queued lines, per domain, the senders and recipients; then a
# --since after the first run's lines leaves the deferrals out, a range
# after the log's end counts nothing, bad input exits 2.
. "$(dirname "$0")/t-mta-common.inc"

# one attempt while Postfix is down (retry-min 1m), a lifetime the aged
# message is past
MTA_RETRY_MIN=1m MTA_QUEUE_EXTRA="lifetime 1h
	warn 0" mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
limits {
	size 1K
}"
mta_up
# L ARGS...: mxbridgectl log-summary over the daemon's log; a sanitizer's
# report (build-asan) fails the test
L() {
	local rc
	"$BIN/mxbridgectl" log-summary "$@" 2>"$S/l.err"
	rc=$?
	grep -Eq "Sanitizer|runtime error" "$S/l.err" &&
		fail "log-summary $*: $(grep -Em1 -A3 "Sanitizer|runtime error" "$S/l.err")" >&2
	cat "$S/l.err" >&2
	return $rc
}
qid() { sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out"; }

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"
send c1 "$TB_SRV_IP4" a@example.org alice@example.com "t-logsummary 1" ||
	fail "M1 not queued: $(cat "$S/send.out")"
id1=$(qid)
send c1 "$TB_SRV_IP4" b@example.org bob@example.com "t-logsummary 2" ||
	fail "M2 not queued: $(cat "$S/send.out")"
id2=$(qid)
[ -n "$id1" ] && [ -n "$id2" ] || fail "no queue ids"
wait_for -t 15 eval 'log_has "msgid=$id1 .*disposition=deferred" && log_has "msgid=$id2 .*disposition=deferred"' ||
	fail "not deferred: $(grep disposition= "$TB_MXB_LOG")"
mta_down
sleep 1.1	# the second run's lines stamped after the first's
t_restart=$(date +%Y-%m-%dT%H:%M:%S)
sleep 1.1
spool_age "$id2" 120
tb_postfix start >/dev/null 2>&1 || fail "postfix did not start"
wait_for tbd_listening_tcp srv ":25" 25 || fail "postfix not listening"
mta_up
ctl queue flush >/dev/null
wait_for -t 20 log_has "msgid=$id1 .*disposition=delivered" || fail "M1 not delivered"
wait_for -t 20 log_has "msgid=$id2 .*disposition=expired" || fail "M2 not expired"
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,bob@example.com,nobody@example.com \
	"t-logsummary 3" || fail "M3 not queued: $(cat "$S/send.out")"
id3=$(qid)
wait_for -t 20 log_has "msgid=$id3 .*to=<nobody@example.com> .*disposition=bounced" ||
	fail "M3 not bounced"
SEND_RECEIVED=20 send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-logsummary 4" &&
	fail "M4 over the size limit was queued: $(cat "$S/send.out")"
grep -q "^ERR 552" "$S/send.out" || fail "M4: $(cat "$S/send.out")"
# the two DSNs (expiry, bounce) delivered to example.org's MX
wait_for -t 20 eval '[ "$(grep -c "to=<[ab]*\(sender\)*@example.org> .*disposition=delivered" "$TB_MXB_LOG")" = 2 ]' ||
	fail "the DSNs were not delivered: $(grep example.org "$TB_MXB_LOG" | grep disposition=)"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"
mta_down

# the bytes, from the queued lines
size() { sed -n "s/.*msgid=$1 .* queued .*size=\([0-9]*\).*/\1/p" "$TB_MXB_LOG" | head -n 1; }
s1=$(size "$id1") s2=$(size "$id2") s3=$(size "$id3")
[ -n "$s1" ] && [ -n "$s2" ] && [ -n "$s3" ] || fail "no sizes: $(grep ' queued ' "$TB_MXB_LOG")"

out=$(L -f "$TB_MXB_LOG") || fail "log-summary failed: $out"
echo "$out" >"$S/summary.txt"
# tot WHAT: the number before WHAT in the grand totals
tot() { awk -v w="$1" '{ n = $1; $1 = ""; sub(/^ +/, "") } $0 == w { print n; exit }' "$S/summary.txt"; }
want() {
	[ "$(tot "$1")" = "$2" ] || fail "log-summary: $1 is '$(tot "$1")', want $2: $out"
}
want received 3
want delivered 5
want "deferred (2 deferrals)" 2
want bounced 1
want expired 1
want rejected 1
want notifications 2
want tempfailed 0
want "bytes received" $((s1 + s2 + s3))
want senders 3
want recipients 4
# per domain: delivered, deferrals
dom() { awk -v d="$1" '$NF == d && /^ *[0-9]/ { print $1, $3; exit }' "$S/summary.txt"; }
[ "$(dom example.com)" = "3 2" ] || fail "example.com row '$(dom example.com)', want '3 2': $out"
[ "$(dom example.org)" = "2 0" ] || fail "example.org row '$(dom example.org)', want '2 0': $out"
# the senders and recipients by message count
sec() { awk -v h="$1" '$0 == h { on = 1; getline; next } on && NF == 0 { exit } on { print $1, $2 }' "$S/summary.txt" | tr '\n' ' '; }
[ "$(sec "Senders by message count")" = "1 a@example.org 1 b@example.org 1 sender@example.org " ] ||
	fail "senders: '$(sec "Senders by message count")': $out"
[ "$(sec "Recipients by message count")" = "2 alice@example.com 1 b@example.org 1 bob@example.com 1 sender@example.org " ] ||
	fail "recipients: '$(sec "Recipients by message count")': $out"
# each delivered recipient counts its message's size: alice of M1, alice
# and bob of M3 (a DSN's size is not logged: 0)
bdel=$(echo "$out" | awk '$2 == "bytes" && $3 == "delivered" { print $1 }')
[ "$bdel" = $((s1 + 2 * s3)) ] || fail "bytes delivered '$bdel', want $((s1 + 2 * s3)): $out"

# --since the restart: M1's and M2's deferrals and arrivals left out
out=$(L -f "$TB_MXB_LOG" --since "$t_restart") || fail "log-summary --since failed: $out"
echo "$out" >"$S/summary.txt"
want received 1
want delivered 5
want "deferred (0 deferrals)" 0
want expired 1
# --until the restart: only the arrivals and deferrals
out=$(L -f - --until "$t_restart" <"$TB_MXB_LOG") || fail "log-summary --until failed: $out"
echo "$out" >"$S/summary.txt"
want received 2
want delivered 0
want "deferred (2 deferrals)" 2
# after the log's end: nothing, exit 1
L -f "$TB_MXB_LOG" --since "$(date -d '+1 hour' +%Y-%m-%dT%H:%M:%S)" >/dev/null
[ $? = 1 ] || fail "a range after the log's end did not exit 1"
# bad input: exit 2 and a reason
for bad in "--since=yesterday" "-x" "extra-word" "--until"; do
	# shellcheck disable=SC2086
	err=$(L -f "$TB_MXB_LOG" $bad 2>&1 >/dev/null)
	rc=$?
	[ $rc = 2 ] || fail "log-summary $bad: exit $rc, not 2"
	echo "$err" | grep -q "^mxbridgectl: log-summary: " || fail "log-summary $bad: no reason: $err"
done
err=$(L 2>&1); [ $? = 2 ] || fail "no -f did not exit 2"
echo "$err" | grep -q "no log file" || fail "no -f: $err"
pass "received, delivered, deferred, bounced, expired, rejected, bytes, domains, senders, recipients counted exactly; ranges, bad input"
