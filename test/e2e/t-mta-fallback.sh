#!/bin/bash
# t-mta-fallback: "fallback-relay HOST port N after DURATION".  Incoming
# mail for example.com while its server (the testbed's Postfix) is down:
#   - first tried on its own route (route=original), deferred, and
#     handed to the fallback relay only once older than "after" (the
#     delivered line's delay);
#   - once older, delivered to the fallback relay (test/fakesmtp.py as
#     relay.example.org port 2525), logged route=fallback;
#   - Postfix never gets it (it stays down), nothing is left queued.
. "$(dirname "$0")/t-mta-common.inc"
PORT=2525

TB_ATEXIT=fake_smtp_stop
fake_smtp plain - - "$S/fake.log" "$PORT"

MTA_RETRY_MIN=1s mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
fallback-relay relay.example.org port $PORT after 4s"
mta_up

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-fallback" ||
	fail "not accepted with the server down: $(cat "$S/send.out")"
id=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$id" ] || fail "no queue id in the reply: $(cat "$S/send.out")"
wait_for -t 10 log_has "msgid=$id .*to=<alice@example.com> .*route=original .*disposition=deferred" ||
	fail "not deferred on its own route first: $(grep "msgid=$id" "$TB_MXB_LOG" | tail -n 2)"
wait_for -t 30 grep -q "MSG t-mta-fallback" "$S/fake.log" ||
	fail "never at the fallback relay: $(grep "msgid=$id" "$TB_MXB_LOG" | tail -n 2)"
wait_for -t 10 log_has "msgid=$id .*to=<alice@example.com> .*relay=relay.example.org\\[$TB_RELAY_IP4\\] route=fallback .*disposition=delivered" ||
	fail "no route=fallback delivered line: $(grep "msgid=$id" "$TB_MXB_LOG" | tail -n 2)"
# not before "after": the delivered line's delay (since arrival) says so
log_has "msgid=$id .*route=fallback delay=([4-9](\.[0-9])?|[1-9][0-9]+) delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+ .*disposition=delivered" ||
	fail "at the fallback relay before 'after': $(grep "msgid=$id.*route=fallback" "$TB_MXB_LOG")"
[ "$(grep -c "MSG t-mta-fallback" "$S/fake.log")" = 1 ] || fail "not exactly once at the fallback relay"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"
maildir_grep alice@example.com "t-mta-fallback" && fail "delivered to the protected server too"

tb_postfix start >/dev/null 2>&1
fake_smtp_stop
mta_down
pass "deferred on its own route, then delivered to the fallback relay once older than after"
