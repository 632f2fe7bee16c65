#!/bin/bash
# t-mta-hold: the hold queue, "mxbridgectl queue hold|release" (issue 15).
# Two messages for example.com while its server (the testbed's Postfix)
# is down, retry-min 1s:
#   - both held after their first attempt: queue list says hold=yes, the
#     reason and queue=hold, queue show hold=yes, the summary a hold
#     table, stats queue_held=2; holding again, releasing what is not
#     held and unknown ids are refused;
#   - Postfix back: no attempt over several retry intervals, a flush
#     leaves them alone, flushing one by its id is refused;
#   - the daemon stopped and started, then killed (SIGKILL) and started:
#     still held, still not tried;
#   - the first released: delivered once, the log has its held and
#     released lines with msgid= and reason=;
#   - the second deleted while held: gone, never delivered.
. "$(dirname "$0")/t-mta-common.inc"

MTA_RETRY_MIN=1s mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}"
mta_up

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"
base=$(maildir_count alice)

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hold one" ||
	fail "not accepted with the server down: $(cat "$S/send.out")"
id=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hold two" ||
	fail "second message not accepted: $(cat "$S/send.out")"
id2=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$id" ] && [ -n "$id2" ] || fail "no queue ids: $id $id2"

# msg ID: the queue list lines of message ID; attempts ID: its recipient's
msg() { ctl queue list | sed -n "/^$1 /,/^[0-9a-f]\{16\} /{/^$1 /p;/^  /p}"; }
attempts() { msg "$1" | sed -n 's/.*to=<alice@example.com> .*attempts=\([0-9]*\).*/\1/p'; }
for m in "$id" "$id2"; do
	wait_for -t 15 eval '[ "$(attempts "$m")" -ge 1 ] 2>/dev/null' ||
		fail "$m not tried: $(ctl queue list)"
done

out=$(ctl queue hold "$id" suspicious attachment) || fail "queue hold failed: $out"
[ "$out" = "held $id" ] || fail "queue hold said: $out"
out=$(ctl queue hold "$id" again 2>&1) && fail "a second hold succeeded: $out"
echo "$out" | grep -q "^already on hold: $id" || fail "second hold: $out"
out=$(ctl queue hold 0000000000000000 2>&1) && fail "hold of an unknown id succeeded: $out"
echo "$out" | grep -q "^no such message: 0000000000000000" || fail "unknown hold: $out"
out=$(ctl queue release "$id2" 2>&1) && fail "release of a message not held succeeded: $out"
echo "$out" | grep -q "^not on hold: $id2" || fail "release not held: $out"
ctl queue hold "$id2" >/dev/null || fail "queue hold $id2 failed"
log_has "msgid=$id held by=admin pending=1 reason=\"suspicious attachment\"" ||
	fail "no held line logged: $(grep "msgid=$id" "$TB_MXB_LOG" | tail -n 2)"

wait_for -t 10 eval 'msg "$id" | grep -q "to=<alice@example.com> state=pending .* queue=hold next=held"' ||
	fail "queue list does not say queue=hold: $(ctl queue list)"
msg "$id" | grep -q "^$id .* hold=yes hold_reason=\"suspicious attachment\"" ||
	fail "queue list lacks the hold and its reason: $(ctl queue list)"
show=$(ctl queue show "$id") || fail "queue show failed"
echo "$show" | grep -q "^hold=yes$" || fail "queue show lacks hold=yes: $show"
echo "$show" | grep -q "^hold_reason=suspicious attachment$" || fail "queue show lacks the reason: $show"
ctl queue summary | sed -n '/^hold$/,$p' | grep -Eq '^ *example\.com +2 +2( +0)+$' ||
	fail "queue summary has no hold table: $(ctl queue summary)"
[ "$(stat_is queue_held)" = 2 ] || fail "stats queue_held is $(stat_is queue_held)"

# Postfix back: nothing is tried, not by the retries nor by a flush
tb_postfix start >/dev/null 2>&1 || fail "postfix did not start"
wait_for tbd_listening_tcp srv ":25" 25 || fail "postfix not listening"
a1=$(attempts "$id") a2=$(attempts "$id2")
ctl queue flush | grep -q '^flushed=0$' || fail "queue flush flushed a held message"
out=$(ctl queue flush "$id" 2>&1) && fail "queue flush of a held message succeeded: $out"
echo "$out" | grep -q "^on hold: $id" || fail "flush held: $out"
sleep 5		# retry-min 1s: a few retries would have come by now
[ "$(attempts "$id")" = "$a1" ] && [ "$(attempts "$id2")" = "$a2" ] ||
	fail "a held message was tried: $(ctl queue list)"
[ "$(maildir_count alice)" = "$base" ] || fail "a held message was delivered"

# restarted, then killed: still held, still not tried
mta_down
mta_up
wait_for -t 15 eval 'msg "$id" | grep -q "^$id .* hold=yes hold_reason=\"suspicious attachment\""' ||
	fail "not held after a restart: $(ctl queue list)"
mxb_kill
mta_up
wait_for -t 15 eval '[ "$(stat_is queue_held)" = 2 ]' ||
	fail "not held after SIGKILL: $(ctl queue list)"
msg "$id" | grep -q "^$id .* hold=yes hold_reason=\"suspicious attachment\"" ||
	fail "the reason did not survive SIGKILL: $(ctl queue list)"
sleep 3
[ "$(attempts "$id")" = "$a1" ] && [ "$(attempts "$id2")" = "$a2" ] ||
	fail "a held message was tried after the restart: $(ctl queue list)"
[ "$(maildir_count alice)" = "$base" ] || fail "a held message was delivered after the restart"

# released: delivered at once, once
out=$(ctl queue release "$id") || fail "queue release failed: $out"
[ "$out" = "released $id" ] || fail "queue release said: $out"
wait_for -t 20 maildir_grep alice@example.com "t-mta-hold one" ||
	fail "not delivered after the release: $(ctl queue list)"
log_has "msgid=$id released by=admin pending=1 held=[0-9]+s reason=\"suspicious attachment\"" ||
	fail "no released line logged: $(grep "msgid=$id" "$TB_MXB_LOG" | tail -n 2)"
log_has "msgid=$id session=[0-9]+ to=<alice@example.com> .*disposition=delivered" ||
	fail "no delivered line logged"
wait_for -t 10 eval '[ "$(stat_is queue_messages)" = 1 ]' ||
	fail "the released message is still queued: $(ctl queue list)"

# the other deleted while held: never delivered
out=$(ctl queue delete "$id2") || fail "queue delete of a held message failed: $out"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"
[ -z "$(ls "$S/spool/queue")" ] || fail "spool not empty: $(ls "$S/spool/queue")"
sleep 2
[ "$(maildir_count alice)" = $((base + 1)) ] ||
	fail "$(( $(maildir_count alice) - base )) messages delivered, not 1"
maildir_grep alice@example.com "t-mta-hold two" && fail "the deleted message was delivered"

mta_down
pass "held: not tried while the server was up, across a restart and SIGKILL; released: delivered once; deleted while held"
