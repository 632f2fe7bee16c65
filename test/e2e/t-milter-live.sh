#!/bin/bash
# t-milter-live: milters on the live relay (outgoing, client-server
# honour), against test/fakemilter.py:
#   - accepted: relayed to the server the client chose, the milter saw
#     the message un-stuffed;
#   - a RCPT the milter refuses never goes upstream, the other one does;
#   - refused at the end (a two-line 554): the client gets it, nothing
#     reaches the upstream (its DATA never ends), the next session works;
#   - header edits: the message is held back until the milter's end and
#     relayed as the milter edited it (added, inserted, changed, deleted
#     fields; the body's stuffed line intact); quarantine: 550;
#   - body replacement and envelope changes are not offered (the actions
#     offered are 0x31), and a body replaced anyway is out of protocol.
. "$(dirname "$0")/t-proxy-common.inc"

fakemilter_up 10999

proxy_conf "milter fake {
	socket inet:127.0.0.1:10999
	content-timeout 5s
}
milters outgoing fake"
proxy_up

sendit() {	# SUBJECT TO[,TO]
	tb_exec c1 python3 -c '
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=30)
s.ehlo(); s.mail("sender@example.org")
for r in sys.argv[3].split(","):
    print("RCPT", r, s.rcpt(r))
try:
    print("DATA", s.data("Subject: %s\r\nX-Drop-Me: 1\r\n\r\nline\r\n.dot line\r\n" % sys.argv[2]))
except smtplib.SMTPException as e:
    print("DATAERR", e)
try:
    s.quit()
except Exception:
    pass' "$TB_EXT_IP4" "$1" "$2" >"$S/send.out" 2>&1
}

n0=$(sink_count "$TB_EXT_DIR")
mode accept
sendit "t-milter-live one" rcpt@example.net
grep -q "^DATA (250" "$S/send.out" || fail "accept: $(cat "$S/send.out")"
wait_for sink_count "$TB_EXT_DIR" -gt "$n0" || fail "not relayed"
grep -q '"head": "line\\r\\n.dot line' "$ML" || fail "milter did not get the body un-stuffed: $(grep '"B"' "$ML")"
log_has "dir=outgoing path=relay" || fail "not the live relay"

mode reject-rcpt bad@example.net
n1=$(sink_count "$TB_EXT_DIR")
sendit "t-milter-live two" bad@example.net,rcpt@example.net
grep -q "^RCPT bad@example.net (550" "$S/send.out" || fail "rcpt: $(cat "$S/send.out")"
wait_for sink_count "$TB_EXT_DIR" -gt "$n1" || fail "two not relayed"
f=$(grep -rl "t-milter-live two" "$TB_EXT_DIR" | head -n 1)
grep -q "bad@example.net" "$f" && fail "the refused RCPT went upstream"

mode replycode-eom
n2=$(sink_count "$TB_EXT_DIR")
sendit "t-milter-live three" rcpt@example.net
grep -q "554" "$S/send.out" && grep -q "second line" "$S/send.out" || fail "eom reply: $(cat "$S/send.out")"
sleep 2
[ "$(sink_count "$TB_EXT_DIR")" = "$n2" ] || fail "a refused message reached the upstream"

# header edits: the message was held back (the milter was granted them)
# and goes up as the milter left it, its body (a stuffed line) intact
mode edit
n4=$(sink_count "$TB_EXT_DIR")
sendit "t-milter-live four" rcpt@example.net
grep -q "^DATA (250" "$S/send.out" || fail "edit: $(cat "$S/send.out")"
wait_for sink_count "$TB_EXT_DIR" -gt "$n4" || fail "edit: not relayed"
f=$(grep -rl "Subject: edited by the milter" "$TB_EXT_DIR" | head -n 1)
[ -n "$f" ] || fail "edit: the Subject change did not reach the upstream"
grep -q "^X-Fake-Milter: seen by the fake milter" "$f" || fail "edit: no added header: $(head -n 20 "$f")"
grep -q "^X-Fake-First: first" "$f" || fail "edit: no inserted header"
grep -q "^X-Drop-Me" "$f" && fail "edit: the deleted header reached the upstream"
grep -q "t-milter-live four" "$f" && fail "edit: the old Subject reached the upstream"
tr -d '\r' <"$f" | grep -qx ".dot line" || fail "edit: the body's dot line changed: $(tail -n 3 "$f")"
log_has "milter header edits applied on the live relay" || fail "edits not logged"
log_has "header edits not applied" && fail "edits not applied"
mode quarantine
sendit "t-milter-live five" rcpt@example.net
grep -q "550" "$S/send.out" || fail "quarantine: $(cat "$S/send.out")"
# body and envelope changes: not offered (the message has gone up);
# a milter that replaces the body anyway is out of protocol
mode replbody
n6=$(sink_count "$TB_EXT_DIR")
sendit "t-milter-live six" rcpt@example.net
grep -q '"cmd": "O", "version": 6, "actions": 49,' "$ML" ||
	fail "offer on the live relay: $(grep '"O"' "$ML")"
grep -q "451" "$S/send.out" || fail "replbody: $(cat "$S/send.out")"
log_has "failed: body replacement not granted" || fail "replbody not refused"
sleep 2
[ "$(sink_count "$TB_EXT_DIR")" = "$n6" ] || fail "replbody: reached the upstream"
mxb_running || fail "daemon died"
pass "live relay: milter steps, refused RCPT, refused end, header edits applied to the held message, quarantine refused, no body or envelope action offered"
