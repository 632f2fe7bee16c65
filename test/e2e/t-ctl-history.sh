#!/bin/bash
# t-ctl-history: "mxbridgectl history" over the test daemon's own log:
#   - a message deferred (Postfix down), the daemon restarted, then
#     delivered: its id gives the session's start, the transaction, the
#     queued, deferred and delivered lines, in that order;
#   - the recipient's address and the client's address find the same
#     message, and not a second message of another client and recipient;
#   - --since later than the delivery: nothing (exit 1); bad input (a
#     word that is no id, address or IP, a bad time, no -f): exit 2;
#   - junk (binary, a 100 KB line) in the file changes nothing, nor a
#     server's reply with "to=<alice...>" after status=.
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}"
mta_up
# H ARGS...: mxbridgectl history; a sanitizer's report (build-asan) fails
# the test even where the exit status is the one expected
H() {
	local rc
	"$BIN/mxbridgectl" history "$@" 2>"$S/h.err"
	rc=$?
	# on stderr: H's output is often captured or thrown away
	grep -Eq "Sanitizer|runtime error" "$S/h.err" &&
		fail "history $*: $(grep -Em1 -A3 "Sanitizer|runtime error" "$S/h.err")" >&2
	cat "$S/h.err" >&2
	return $rc
}

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-ctl-history 1" ||
	fail "not queued: $(cat "$S/send.out")"
id=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$id" ] || fail "no queue id: $(cat "$S/send.out")"
wait_for -t 15 log_has "msgid=$id .*disposition=deferred" || fail "not deferred"
# a restart: session ids start again, history must not mix the runs
mta_down
mta_up
tb_postfix start >/dev/null 2>&1 || fail "postfix did not start"
wait_for tbd_listening_tcp srv ":25" 25 || fail "postfix not listening"
ctl queue flush >/dev/null
wait_for -t 20 log_has "msgid=$id .*disposition=delivered" || fail "not delivered"
send c2 "$TB_SRV_IP4" other@example.org bob@example.com "t-ctl-history 2" ||
	fail "second message not queued: $(cat "$S/send.out")"
id2=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
wait_for -t 20 log_has "msgid=$id2 .*disposition=delivered" || fail "second not delivered"

out=$(H -f "$TB_MXB_LOG" "$id") || fail "history $id failed: $out"
# the order of events: session start, queued (and the transaction's
# line), deferred, delivered
echo "$out" | awk -v id="$id" '
	/ session=[0-9]+ client=.* port=/ && !s { s = NR }
	/ reply=".*queued as / { t = NR }
	$0 ~ "msgid=" id " session=[0-9]+ queued " { q = NR }
	/disposition=deferred/ && !d { d = NR }
	/disposition=delivered/ { v = NR }
	END { exit !(s && s < t && s < q && q < d && d < v) }' ||
	fail "history of $id not complete and in order: $out"
echo "$out" | grep -q "$id2\|bob@" && fail "history of $id shows the other message: $out"
sort -c <(echo "$out" | cut -c1-23) || fail "not in time order: $out"
n=$(echo "$out" | wc -l)

out=$(H -f "$TB_MXB_LOG" "<alice@EXAMPLE.com>") || fail "history by recipient failed"
echo "$out" | grep -q "msgid=$id .*disposition=delivered" || fail "by recipient: $out"
echo "$out" | grep -q "$id2" && fail "by recipient shows the other message: $out"
out=$(H -f "$TB_MXB_LOG" sender@example.org) || fail "history by sender failed"
echo "$out" | grep -q "msgid=$id .*disposition=delivered" || fail "by sender: $out"
out=$(H -f "$TB_MXB_LOG" "$TB_C1_IP4") || fail "history by client failed"
echo "$out" | grep -q "msgid=$id .*disposition=delivered" || fail "by client: $out"
echo "$out" | grep -q "$id2\|$TB_C2_IP4" && fail "by client shows the other client: $out"
out=$(H -f "$TB_MXB_LOG" "$TB_C2_IP4") || fail "history of c2 failed"
echo "$out" | grep -q "msgid=$id2 .*disposition=delivered" || fail "c2: $out"
echo "$out" | grep -q "$id\b" && fail "c2 shows c1's message: $out"

# the time range: the lines before --until only; after the end, none.
# --until the delivery's own stamp to the millisecond: the deferral, the
# restart and the delivery can all fall within one second
first=$(echo "$(H -f "$TB_MXB_LOG" "$id")" | grep disposition=delivered | cut -c1-23)
out=$(H -f "$TB_MXB_LOG" --until "$first" "$id") || fail "--until failed"
echo "$out" | grep -q disposition=delivered && fail "--until $first kept the delivery: $out"
echo "$out" | grep -q disposition=deferred || fail "--until $first lost the deferral: $out"
H -f "$TB_MXB_LOG" --since "$(date -d '+1 hour' +%Y-%m-%dT%H:%M:%S)" "$id" >/dev/null
[ $? = 1 ] || fail "a range after the log's end did not exit 1"

# bad input: exit 2 and a reason
for bad in "no-such-thing" "1.2.3.4:99999" "--since=yesterday $id" "-x $id" ""; do
	# shellcheck disable=SC2086
	err=$(H -f "$TB_MXB_LOG" $bad 2>&1 >/dev/null)
	rc=$?
	[ $rc = 2 ] || fail "history $bad: exit $rc, not 2"
	echo "$err" | grep -q "^mxbridgectl: history: " || fail "history $bad: no reason: $err"
done
err=$(H "$id" 2>&1); [ $? = 2 ] || fail "no -f did not exit 2"
echo "$err" | grep -q "no log file" || fail "no -f: $err"
H -f "$S/no-such-file" "$id" >/dev/null 2>&1; [ $? = 2 ] || fail "missing file did not exit 2"

# junk in the file: binary bytes, NULs, a line of 100 KB, a torn stamp
{ cat "$TB_MXB_LOG"; head -c 65536 /dev/urandom
  printf '\n2026-01-01T00:00:00.000 msgid=%s ' "$id"; head -c 100000 /dev/zero | tr '\0' x
  printf '\n2026-13-99T99:99:99.000 msgid=%s torn\n' "$id"
  # a server's reply naming alice: the words after status= are not fields
  printf '2026-01-01T00:00:01.000 msgid=%s session=9 to=<zed@example.com> disposition=delivered status=sent (250 to=<alice@example.com> ok)\n' "$id2"
} >"$S/junk.log"
out=$(H -f - "$id" <"$S/junk.log") || fail "history of the junk file failed"
[ "$(echo "$out" | wc -l)" = "$n" ] || fail "junk changed the answer: $out"
out=$(H -f - "<alice@example.com>" <"$S/junk.log") || fail "history of alice in the junk file failed"
echo "$out" | grep -q "$id2" && fail "a reply's to= made a line match: $out"
mta_down
pass "by id, address and client, in order, across a restart; ranges, bad input, junk"
