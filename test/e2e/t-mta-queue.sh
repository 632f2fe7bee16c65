#!/bin/bash
# t-mta-queue: incoming mail is queued durably while the protected server
# is down, and delivered once it is back.
#   - Postfix stopped: the client still gets 250 (queued as ID), the
#     queue lists the message with its next attempt and the diagnostic;
#   - queue show prints the envelope and the headers;
#   - Postfix started, "queue flush": delivered into alice's Maildir
#     exactly once, with one Received: of the box, the dot line intact;
#   - the spool is empty afterwards, the counters say so.
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}"
mta_up

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-queue down" ||
	fail "client did not get 250 with the server down: $(cat "$S/send.out")"
id=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$id" ] || fail "no queue id in the reply: $(cat "$S/send.out")"
[ -f "$S/spool/queue/$id" ] || fail "no spool file for $id"

wait_for -t 15 eval 'ctl queue list | grep -q "state=pending.*next=.*diag="' ||
	fail "queue list does not show a deferred recipient: $(ctl queue list)"
list=$(ctl queue list)
echo "$list" | grep -q "^$id arrival=.* from=<sender@example.org>" ||
	fail "queue list lacks the message: $list"
echo "$list" | grep -q "to=<alice@example.com> state=pending route=original attempts=[1-9]" ||
	fail "queue list lacks the recipient state: $list"
echo "$list" | grep -Eq 'diag="connect to mx.example.com\[(192.0.2.10|2001:db8:2::10)\]' ||
	fail "queue list lacks the connect diagnostic: $list"
show=$(ctl queue show "$id") || fail "queue show failed"
echo "$show" | grep -q "^client=$TB_C1_IP4:" || fail "queue show lacks the client: $show"
echo "$show" | grep -q "^orig_dst=$TB_SRV_IP4:25" || fail "queue show lacks orig_dst: $show"
echo "$show" | grep -q "^Subject: t-mta-queue down" || fail "queue show lacks the headers: $show"
echo "$show" | grep -q "hello from the testbed" && fail "queue show printed the body"
log_has "msgid=$id session=[0-9]+ to=<alice@example.com> .*disposition=deferred" ||
	fail "no deferred line logged"
[ "$(maildir_count alice)" = 0 ] || fail "delivered while postfix was down?"
ctl queue show 0000000000000000 >/dev/null 2>&1 && fail "queue show of a bad id succeeded"

tb_postfix start >/dev/null 2>&1 || fail "postfix did not start"
wait_for tbd_listening_tcp srv ":25" 25 || fail "postfix not listening"
ctl queue flush | grep -q '^flushed=[1-9]' || fail "queue flush did nothing"
wait_for -t 20 maildir_count alice -ge 1 || fail "not delivered after the flush"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"
sleep 2
[ "$(maildir_count alice)" = 1 ] || fail "delivered $(maildir_count alice) times"
f=$(find "$TB_MAILDIR/alice/new" "$TB_MAILDIR/alice/cur" -type f | head -n 1)
grep -q "^Subject: t-mta-queue down" "$f" || fail "wrong message in the Maildir"
[ "$(grep -c '^Received: .*(mxbridge)\|by gw.example.com (mxbridge)' "$f")" = 1 ] ||
	fail "the box's Received: is not there exactly once: $(grep -A2 '^Received:' "$f")"
grep -q '^\.leading dot line' "$f" || fail "the dot line did not survive"
log_has "msgid=$id session=[0-9]+ to=<alice@example.com> .*relay=.*192.0.2.10.* disposition=delivered" ||
	fail "no delivered line logged"
# Postfix's words: delay= and its four parts, status= with the reply last
pf_check() {
	grep "msgid=$id .*to=<alice@example.com> .*disposition=$1" "$TB_MXB_LOG" | tail -n 1 |
		python3 -c '
import re, sys
ln = sys.stdin.read().strip()
m = re.search(r" delay=([0-9.]+) delays=([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ", ln)
if not m:
    sys.exit("no delay= delays=a/b/c/d: " + ln)
total, parts = float(m.group(1)), [float(x) for x in m.group(2, 3, 4, 5)]
# each rounded to two significant digits: a little slack per part
if abs(sum(parts) - total) > 0.05 + 0.1 * total:
    sys.exit("delays %s do not add up to delay=%s: %s" % (parts, total, ln))
if float(sys.argv[2]) > 0 and parts[1] < float(sys.argv[2]):
    sys.exit("b (in the queue) %s, want at least %s: %s" % (parts[1], sys.argv[2], ln))
if not re.search(sys.argv[1], ln):
    sys.exit("no %s: %s" % (sys.argv[1], ln))
' "$2" "$3" || fail "Postfix fields of the $1 line"
}
pf_check deferred ' dsn=4\.[0-9.]+ disposition=deferred( tls=[a-z]+)? status=deferred \(connect to mx\.example\.com\[[^]]+\].+\)$' 0
pf_check delivered ' dsn=2\.0\.0 disposition=delivered tls=[a-z]+ status=sent \(250 2\.0\.0 Ok: queued as [0-9A-Za-z]+\)$' 0.1
[ -z "$(ls "$S/spool/queue")" ] || fail "spool not empty: $(ls "$S/spool/queue")"
[ "$(stat_is delivered)" -ge 1 ] || fail "stats delivered=0"
[ "$(stat_is deferred)" -ge 1 ] || fail "stats deferred=0"

# the same over IPv6: the original destination is the server's v6 address
send c1 "$TB_SRV_IP6" sender@example.org alice@example.com "t-mta-queue v6" ||
	fail "IPv6 message not accepted: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge 2 || fail "IPv6 message not delivered"
log_has "to=<alice@example.com> .*relay=mx.example.com\[$TB_SRV_IP6\] route=original .*disposition=delivered" ||
	fail "not delivered to the v6 original destination: $(grep 'alice' "$TB_MXB_LOG" | tail -n 1)"

mta_down
pass "queued while the server was down, delivered once after flush; IPv6"
