#!/bin/bash
# t-feature-verify: verify-recipients on the incoming MTA path.
#   - alice@example.com is accepted and delivered; nosuchuser@example.com
#     is refused at RCPT with the protected server's own 550, in the
#     session, and nothing is queued or bounced for it;
#   - the callout comes from the box (Postfix logs it), and a second
#     session gets the refusal from the cache without asking again;
#   - the server down: 451 4.4.3 for a recipient not in the cache, while
#     a cached one is still accepted;
#   - a server that never answers: 451 4.4.3 after the callout timeout.
. "$(dirname "$0")/t-mta-common.inc"

SILENT_IP=192.0.2.23	# a protected server that accepts and says nothing

mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
	verify-recipients yes
}
domain \"example.org\" {
	server $SILENT_IP port 25
	verify-recipients yes
}"
mta_up

# rcpts SERVER RCPT[,RCPT...]: one message, every RCPT's reply on a line
# "RCPT <addr> <code> <text>", then "DATA <code> <text>" if any was taken
rcpts() {
	tb_exec c1 python3 -c '
import smtplib, sys
srv, rcpts = sys.argv[1], sys.argv[2].split(",")
s = smtplib.SMTP(srv, 25, local_hostname="c1.test.example", timeout=60)
s.ehlo()
print("MAIL %d" % s.mail("sender@example.org")[0])
ok = 0
for r in rcpts:
    code, rep = s.rcpt(r)
    print("RCPT %s %d %s" % (r, code, rep.decode()), flush=True)
    ok += code == 250
if ok:
    code, rep = s.data("Subject: t-feature-verify\r\n\r\nhello\r\n")
    print("DATA %d %s" % (code, rep.decode()))
s.quit()
' "$1" "$2" >"$S/rcpts.out" 2>&1
}
out_has() { grep -Eq -- "$1" "$S/rcpts.out"; }

# 1. a known and an unknown user
rcpts "$TB_SRV_IP4" alice@example.com,nosuchuser@example.com ||
	fail "session failed: $(tail -n 3 "$S/rcpts.out")"
out_has "^RCPT alice@example.com 250 " || fail "alice not accepted: $(cat "$S/rcpts.out")"
out_has "^RCPT nosuchuser@example.com 550 5\.1\.1 <nosuchuser@example.com>: Recipient address rejected" ||
	fail "nosuchuser not refused with the server's 550: $(cat "$S/rcpts.out")"
out_has "^DATA 250 " || fail "message not taken: $(cat "$S/rcpts.out")"
wait_for -t 20 maildir_count alice -ge 1 || fail "alice's message not delivered"
log_has "verify=<alice@example.com> result=accepted cached=no" || fail "alice's callout not logged"
log_has "verify=<nosuchuser@example.com> result=refused cached=no reply=\"550 5\.1\.1" ||
	fail "nosuchuser's callout not logged: $(grep verify= "$TB_MXB_LOG")"
maillog_has "reject: RCPT from unknown\[$TB_BOX_IP4\]: 550 5\.1\.1 <nosuchuser@example.com>" ||
	fail "Postfix did not see the callout from the box"
log_has "from=<sender@example.org> to=<alice@example.com> nrcpt=1 .*disposition=queued" ||
	fail "the queued message is not for alice alone: $(grep disposition=queued "$TB_MXB_LOG")"
wait_for -t 20 queue_empty || fail "the queue did not empty: $(ctl stats | grep ^queue)"
grep nosuchuser "$TB_MXB_LOG" | grep -qv "verify=" &&
	fail "nosuchuser went further than RCPT: $(grep nosuchuser "$TB_MXB_LOG" | grep -v verify= | head -n 2)"
grep -Eq "queued dsn| kind=" "$TB_MXB_LOG" && fail "a DSN was made: $(grep -Em1 "queued dsn| kind=" "$TB_MXB_LOG")"

# 2. the cache: refused again without a callout
n0=$(grep -c "RCPT from unknown\[$TB_BOX_IP4\]" "$TB_MAILLOG")
rcpts "$TB_SRV_IP4" nosuchuser@example.com,alice@example.com ||
	fail "second session failed: $(tail -n 3 "$S/rcpts.out")"
out_has "^RCPT nosuchuser@example.com 550 5\.1\.1" || fail "cached refusal: $(cat "$S/rcpts.out")"
log_has "verify=<nosuchuser@example.com> result=refused cached=yes" || fail "cache hit not logged"
log_has "verify=<alice@example.com> result=accepted cached=yes" || fail "cached acceptance not logged"
sleep 1
[ "$(grep -c "RCPT from unknown\[$TB_BOX_IP4\]" "$TB_MAILLOG")" = "$n0" ] ||
	fail "the server was asked again"

# 3. the server down: 451 4.4.3, cached answers still hold
tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv "$TB_SRV_IP4:25" 25' || fail "postfix did not stop"
rcpts "$TB_SRV_IP4" alice@example.com,bob@example.com
out_has "^RCPT bob@example.com 451 4\.4\.3 " || fail "no 451 4.4.3 with the server down: $(cat "$S/rcpts.out")"
out_has "^RCPT alice@example.com 250 " || fail "cached alice refused with the server down"
log_has "verify=<bob@example.com> result=unavailable cached=no" || fail "unavailable callout not logged"

# 4. a server that never answers: 451 4.4.3 after the callout timeout
tb_exec out ip addr add "$SILENT_IP/24" dev eth0 || fail "cannot add $SILENT_IP"
ip netns exec "$(tb_ns out)" python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 25)); s.listen(8); c = []
while True:
    c.append(s.accept()[0])
' "$SILENT_IP" </dev/null >/dev/null 2>&1 &
tbd_record_pid out silent $!
wait_for tbd_listening_tcp out "$SILENT_IP:25" 25 || fail "silent server did not start"
t0=$SECONDS
rcpts "$SILENT_IP" someone@example.org
out_has "^RCPT someone@example.org 451 4\.4\.3 " || fail "no 451 4.4.3 from a silent server: $(cat "$S/rcpts.out")"
[ $((SECONDS - t0)) -ge 9 ] && [ $((SECONDS - t0)) -le 20 ] || fail "the timeout took $((SECONDS - t0)) s"
log_has "verify=<someone@example.org> result=unavailable cached=no reply=\"greeting timeout\"" ||
	fail "timeout not logged: $(grep verify=.someone "$TB_MXB_LOG")"

mta_down
pass "verify-recipients: unknown users refused in session with the server's 550, cache, 451 4.4.3 when unavailable"
