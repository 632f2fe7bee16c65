#!/bin/bash
# t-mta-slowqueue: "queue { slow-after 2; slow-retry 1h }".  Incoming mail
# for example.com while its server (the testbed's Postfix) is down:
#   - after one failed attempt it is retried after retry-min;
#   - after the second it is in the slow queue: queue=slow, the next
#     attempt an hour away, and no third attempt comes by itself;
#   - a fresh message to the same server is still tried at once;
#   - with Postfix back, "queue flush" delivers both.
. "$(dirname "$0")/t-mta-common.inc"

MTA_RETRY_MIN=1s MTA_QUEUE_EXTRA="slow-after 2
	slow-retry 1h" mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}"
mta_up

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-slow old" ||
	fail "not accepted with the server down: $(cat "$S/send.out")"
id=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$id" ] || fail "no queue id in the reply: $(cat "$S/send.out")"
attempts() { ctl queue list | sed -n "/^$id /,/^[0-9a-f]\{16\} /s/.*to=<alice@example.com> .*attempts=\([0-9]*\).*/\1/p"; }
wait_for -t 15 eval '[ "$(attempts)" = 2 ]' ||
	fail "no second attempt after retry-min: $(ctl queue list)"
wait_for -t 5 eval 'ctl queue list | grep -q "to=<alice@example.com> .*attempts=2 queue=slow "' ||
	fail "not in the slow queue after two failures: $(ctl queue list)"
next=$(ctl queue list | sed -n "s/.*attempts=2 queue=slow next=\([^ ]*\).*/\1/p" | head -n 1)
[ -n "$next" ] && [ $(( $(date -d "$next" +%s) - $(date +%s) )) -ge 3000 ] ||
	fail "slow queue: next attempt $next is not an hour away"
# nothing by itself for a while (retry-min is 1s)
sleep 3
[ "$(attempts)" = 2 ] || fail "a third attempt came before slow-retry: $(ctl queue list)"

# a fresh message is tried at once, not held behind the slow one
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-slow new" ||
	fail "second message not accepted: $(cat "$S/send.out")"
id2=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
wait_for -t 10 log_has "msgid=$id2 .*attempts=1 .*disposition=deferred" ||
	fail "the fresh message was not tried: $(grep "msgid=$id2" "$TB_MXB_LOG" | tail -n 2)"

tb_postfix start >/dev/null 2>&1
wait_for eval 'tbd_listening_tcp srv ":25" 25' || fail "postfix did not start"
ctl queue flush >/dev/null
wait_for -t 20 queue_empty || fail "not delivered after the flush: $(ctl queue list)"
wait_for -t 10 maildir_grep alice@example.com "t-mta-slow old" || fail "old message not in the Maildir"
wait_for -t 10 maildir_grep alice@example.com "t-mta-slow new" || fail "new message not in the Maildir"

mta_down
pass "slow queue after two failures, an hour's retry, fresh mail still tried at once"
