#!/bin/bash
# t-milter: the milter client on the MTA path, against test/fakemilter.py
# (a scriptable milter in the box's namespace) and the real Postfix.
#   - what the milter is told: the connection (client address, port),
#     the macros ({daemon_name}, j, i = the queue id, {client_addr}), HELO,
#     MAIL, RCPT, every header field, the body, the end;
#   - header edits (add, insert at 0, change, delete) are in the copy
#     delivered, the body intact; the same for a 3 MiB message (the edit
#     of a body that went to its spill file);
#   - a RCPT a milter refuses gets its reply, the other one is delivered;
#   - a two-line custom reply at the end reaches the client intact;
#     tempfail gives 451, discard 250 and no delivery, a body reject 5xx;
#   - a milter that is down, speaks garbage, sends an oversized packet,
#     closes at the end or never answers gets its default-action
#     (tempfail: 451 and nothing queued; accept: delivered, logged);
#   - with "lean" flags (no HELO step, no header replies, leading space)
#     the session still works;
#   - a quarantine puts the message on hold; released, it is delivered;
#   - the daemon lives through all of it, no sanitizer report.
. "$(dirname "$0")/t-mta-common.inc"

MP=10999
fakemilter_up $MP

milter_conf() {
	mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
milter fake {
	socket inet:127.0.0.1:${1:-$MP}
	connect-timeout 3s
	command-timeout 3s
	content-timeout 3s
	default-action ${2:-tempfail}
}
milters incoming fake"
}

milter_conf
mta_up
n0=$(maildir_count alice)

# 1. edits, and what the milter was told
mode edit
tb_exec c1 python3 -c '
import smtplib, sys
msg = ("From: <sender@example.org>\r\nTo: <alice@example.com>\r\n"
       "Subject: t-milter one\r\nX-Drop-Me: yes\r\nX-Folded: first\r\n"
       "\tsecond\r\n\r\nbody line one\r\n.leading dot\r\n")
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=30)
s.sendmail("sender@example.org", ["alice@example.com"], msg)
s.quit()' "$TB_SRV_IP4" >"$S/send.out" 2>&1 || fail "send 1: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge $((n0 + 1)) || fail "message 1 not delivered: $(tail -n 5 "$TB_MXB_LOG")"
f=$(grep -rl "X-Fake-Milter" "$TB_MAILDIR/alice/new" | head -n 1)
[ -n "$f" ] || fail "no X-Fake-Milter header in the delivered copy"
grep -q "^X-Fake-Milter: seen by the fake milter" "$f" || fail "added header wrong: $(cat "$f")"
grep -q "^Subject: edited by the milter" "$f" || fail "Subject not changed: $(grep -i ^subject "$f")"
grep -q "^X-Drop-Me" "$f" && fail "X-Drop-Me not deleted"
grep -q "^X-Fake-First: first" "$f" || fail "inserted header missing"
grep -q "^	second line" "$f" || fail "inserted header's fold missing: $(grep -A1 X-Fake-First "$f")"
# inserted at 0: before the client's first field (after the trace fields)
awk '/^X-Fake-First/{a=NR} /^From: <sender/{b=NR} END{exit !(a && b && a < b)}' "$f" ||
	fail "X-Fake-First not before From: $(head -n 20 "$f")"
grep -q "^\.leading dot" "$f" || fail "body changed"
grep -q "^X-Folded: first" "$f" && grep -q "^	second$" "$f" || fail "folded header lost"
mlog_has '"cmd": "C", "host": "\[192.0.2.101\]", "family": "4"' || fail "connect info: $(grep '"C"' "$ML")"
mlog_has '"addr": "192.0.2.101"' || fail "connect address"
mlog_has '"{daemon_name}", "mxbridge"' || fail "no {daemon_name}"
mlog_has '"j", "gw.example.com"' || fail "no j macro"
mlog_has '"{client_addr}", "192.0.2.101"' || fail "no {client_addr}"
grep '"stage": "T"' "$ML" | grep -Eq '"i", "[0-9a-f]{16}"' || fail "no queue id macro at DATA"
mlog_has '"cmd": "H", "args": \["c1.test.example"\]' || fail "no HELO"
mlog_has '"cmd": "M", "args": \["<sender@example.org>"' || fail "no MAIL"
mlog_has '"cmd": "R", "args": \["<alice@example.com>"\]' || fail "no RCPT"
mlog_has '"name": "Subject", "value": "t-milter one"' || fail "no Subject header"
mlog_has '"name": "X-Folded", "value": "first\\n\\tsecond"' || fail "folded header not as Postfix sends it: $(grep X-Folded "$ML")"
mlog_has '"cmd": "N"' || fail "no EOH"
mlog_has '"head": "body line one' || fail "body not sent"
mlog_has '"cmd": "E", "body": 29' || fail "body length at the end: $(grep '"E"' "$ML")"
log_has "milter header edited" || fail "edit not logged"

# 2. one RCPT refused with the milter's reply, the other delivered
mode reject-rcpt bob@example.com
n1=$(maildir_count alice)
tb_exec c1 python3 -c '
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=30)
s.ehlo(); s.mail("sender@example.org")
print("A", s.rcpt("alice@example.com"))
print("B", s.rcpt("bob@example.com"))
print("D", s.data("Subject: t-milter two\r\n\r\nhi\r\n"))
s.quit()' "$TB_SRV_IP4" >"$S/send.out" 2>&1 || fail "send 2: $(cat "$S/send.out")"
grep -q "^B (550, b'5.7.1 fake milter: no such user here')" "$S/send.out" ||
	fail "RCPT reply: $(cat "$S/send.out")"
grep -q "^D (250" "$S/send.out" || fail "DATA: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge $((n1 + 1)) || fail "message 2 not delivered"

# 3. a two-line custom reply at the end, intact
mode replycode-eom
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter three" &&
	fail "replycode accepted: $(cat "$S/send.out")"
grep -q "ERR 554 5.7.1 fake milter first line" "$S/send.out" ||
	fail "first line: $(cat "$S/send.out")"
grep -q "5.7.1 fake milter second line" "$S/send.out" || fail "second line: $(cat "$S/send.out")"

# 4. tempfail, 5. discard, 6. a body reject
mode tempfail-eom
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter four" &&
	fail "tempfail accepted"
grep -q "ERR 451 4.7.1 Service unavailable" "$S/send.out" || fail "tempfail: $(cat "$S/send.out")"
mode discard-eom
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter five" ||
	fail "discard not 250: $(cat "$S/send.out")"
grep -q "discarded" "$S/send.out" || fail "discard: $(cat "$S/send.out")"
log_has "milter=fake discarded" || fail "discard not logged"
mode reject-body
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter six" &&
	fail "body reject accepted"
grep -q "ERR 550 5.7.1 Command rejected" "$S/send.out" || fail "body reject: $(cat "$S/send.out")"
wait_for -t 10 queue_empty || fail "refused mail queued: $(ctl queue list)"

# 7. a big message: the edit of a body in its spill file
mode edit
n2=$(maildir_count alice)
tb_exec c1 python3 -c '
import smtplib, sys
line = "0123456789" * 7 + "\r\n"
msg = ("Subject: t-milter big\r\nX-Drop-Me: 1\r\n\r\n" + line * 43000 + "the end\r\n")
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=60)
s.sendmail("sender@example.org", ["alice@example.com"], msg)
s.quit()' "$TB_SRV_IP4" >"$S/send.out" 2>&1 || fail "send big: $(cat "$S/send.out")"
wait_for -t 30 maildir_count alice -ge $((n2 + 1)) || fail "big message not delivered"
f=$(grep -rl "^X-Fake-Milter" "$TB_MAILDIR/alice/new" | xargs grep -l "^the end" | head -n 1)
[ -n "$f" ] || fail "big message not edited"
[ "$(grep -c '^0123456789' "$f")" = 43000 ] || fail "big body: $(grep -c '^0123456789' "$f") lines"
grep -q "^X-Drop-Me" "$f" && fail "big: X-Drop-Me kept"
mlog_has '"cmd": "E", "body": 3096009' || fail "big body length: $(grep '"E"' "$ML")"

# 8. lean flags: no HELO step, no header replies, leading spaces
mode lean
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter lean" ||
	fail "lean: $(cat "$S/send.out")"
mlog_has '"cmd": "H"' && fail "HELO sent to a milter that asked for none"
mlog_has '"name": "Subject", "value": " t-milter lean"' || fail "leading space not kept: $(grep Subject "$ML")"

# 8b. quarantine: queued on hold, never tried; released, delivered
mode quarantine
n4=$(maildir_count alice)
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter quarantine" ||
	fail "quarantine not 250: $(cat "$S/send.out")"
qid=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$qid" ] || fail "no queue id: $(cat "$S/send.out")"
wait_for -t 10 eval 'ctl queue list | grep -q "queue=hold"' || fail "not on hold: $(ctl queue list)"
ctl queue list | grep "^$qid" | grep -q 'hold_reason="fake quarantine reason"' ||
	fail "hold reason: $(ctl queue list)"
log_has "msgid=$qid milter quarantine" || fail "quarantine not logged"
sleep 3
[ "$(maildir_count alice)" = "$n4" ] || fail "a quarantined message was delivered"
ctl queue release "$qid" >/dev/null || fail "release failed"
wait_for -t 20 maildir_count alice -ge $((n4 + 1)) || fail "released message not delivered"

# 9. a milter that misbehaves: its default-action (tempfail), promptly
for m in garbage oversize close-eom slow-eom; do
	mode $m
	t0=$(date +%s)
	send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter $m" &&
		fail "$m: accepted: $(cat "$S/send.out")"
	grep -Eq "451 (b')?4.7.1 Service unavailable" "$S/send.out" || fail "$m: $(cat "$S/send.out")"
	[ $(($(date +%s) - t0)) -le 10 ] || fail "$m: took $(($(date +%s) - t0)) s"
	log_has "milter=fake .*failed: .*action=tempfail" || fail "$m: failure not logged"
done
wait_for -t 10 queue_empty || fail "mail queued past a failed milter: $(ctl queue list)"
mxb_running || fail "daemon died"
mta_down

# 10. a milter that is down: tempfail at MAIL; accept: delivered
milter_conf 10998 tempfail
mta_up
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter down" &&
	fail "accepted with the milter down"
grep -Eq "451 (b')?4.7.1" "$S/send.out" || fail "down: $(cat "$S/send.out")"
log_has "milter=fake socket=inet:127.0.0.1:10998 state=connecting failed: connect: connection refused; action=tempfail" ||
	fail "down not logged: $(grep milter "$TB_MXB_LOG" | tail -n 3)"
mta_down
milter_conf 10998 accept
mta_up
n3=$(maildir_count alice)
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter down accept" ||
	fail "default-action accept refused: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge $((n3 + 1)) || fail "not delivered with default-action accept"
log_has "action=accept" || fail "accept not logged"
mta_down
pass "milter steps, macros, edits (spilled too), custom replies, default actions"
