#!/bin/bash
# t-milter-engines-live: real rspamd and clamav-milter (test/engines.inc,
# in the box on 127.0.0.1) as the milters of the live relay (outgoing,
# client-server honour), "milters outgoing rspamd clamav":
#   1. a normal message: relayed live to the server the client chose
#      (path=relay, nothing spooled), held back until the milters'
#      end and relayed with their headers (X-Spamd-Result, X-Virus-Status);
#   2. GTUBE: rspamd's own reply (554 5.7.1 Gtube pattern) reaches the
#      client, and nothing reaches the upstream;
#   3. EICAR: refused (clamav-milter's reject, 550 5.7.1), nothing reaches
#      the upstream;
#   4. rspamd stopped (default-action tempfail): 451 at the first command
#      it had to answer, nothing relayed.
# "Nothing reaches the upstream" is checked after a later message of the
# same client has arrived there: the refused one's leg was dropped
# before its reply, so it cannot come after.
. "$(dirname "$0")/t-proxy-common.inc"
. "$TB_LIB_DIR/engines.inc"
need rspamd clamd clamav-milter
LO=127.0.0.1
P_R=11332 P_C=11333
eng_rspamd box $LO $P_R || fail "rspamd: $ENG_WHY"
eng_clamav box $LO $P_C || fail "clamav: $ENG_WHY"
proxy_conf "milter rspamd { socket inet:$LO:$P_R; content-timeout 30s }
milter clamav { socket inet:$LO:$P_C; content-timeout 30s }
milters outgoing rspamd clamav"
proxy_up

# sendit SUBJECT TEXT: one message from c1 to the outside server it
# dialled; "OK" or "ERR code reply" (at any command) in send.out
sendit() {
	tb_exec c1 python3 -c '
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=60)
try:
    s.sendmail("someone@example.org", ["rcpt@example.net"],
        "Subject: %s\r\n\r\n%s\r\n" % (sys.argv[2], sys.argv[3]))
    print("OK")
except smtplib.SMTPResponseException as e:
    print("ERR", e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPRecipientsRefused as e:
    print("ERR", e.recipients)
' "$TB_EXT_IP4" "$1" "$2" >"$S/send.out" 2>&1
}
# arrived SUBJECT: relayed to the outside server (within the wait)
arrived() { wait_for -t 30 grep -rqs "Subject: $1" "$TB_EXT_DIR"; }

# 1. plain: relayed live, the edits logged, not applied
sendit "t-mel plain" "a plain message"
grep -q "^OK" "$S/send.out" || fail "plain: $(cat "$S/send.out")"
arrived "t-mel plain" || fail "plain not relayed"
log_has "dir=outgoing path=relay" || fail "not the live relay"
log_has "milter header edits applied on the live relay" || fail "rspamd's edits not logged"
f=$(grep -rl "Subject: t-mel plain" "$TB_EXT_DIR" | head -n 1)
grep -q "^X-Spamd-Result: " "$f" || fail "rspamd's headers not on the relayed message: $(head -n 20 "$f")"
grep -q "^X-Virus-Status: Clean" "$f" || fail "clamav-milter's header not on the relayed message"
[ "$(spool_files)" = 0 ] || fail "something was spooled on the live relay"

# 2. GTUBE, then 3. EICAR: refused with the engine's reply
sendit "t-mel gtube" "$ENG_GTUBE"
grep -q "^ERR 554 5.7.1 Gtube pattern" "$S/send.out" || fail "GTUBE: $(cat "$S/send.out")"
sendit "t-mel eicar" "this line carries $ENG_EICAR inside it"
grep -q "^ERR 550 5.7.1" "$S/send.out" || fail "EICAR: $(cat "$S/send.out")"
wait_for grep -q "infected by Eicar-Body-Local" "$ENG_CLAMAV_MILTER_LOG" ||
	fail "clamav-milter did not find it"
sendit "t-mel after" "a plain message after the refused ones"
grep -q "^OK" "$S/send.out" || fail "after: $(cat "$S/send.out")"
arrived "t-mel after" || fail "the message after the refused ones not relayed"
grep -rqs -e "Subject: t-mel gtube" -e "Subject: t-mel eicar" "$TB_EXT_DIR" &&
	fail "a refused message reached the upstream"

# 4. rspamd gone: tempfail, nothing relayed (the client never had its
# DATA accepted, so nothing can be on its way)
eng_stop "rspamd-$P_R"
n=$(sink_count "$TB_EXT_DIR")
sendit "t-mel down" "rspamd is down"
grep -q "^ERR 451" "$S/send.out" || fail "rspamd down: $(cat "$S/send.out")"
log_has "milter=rspamd .*tempfail" || fail "the failure not logged"
[ "$(sink_count "$TB_EXT_DIR")" = "$n" ] || fail "relayed with rspamd down"
mxb_down
pass "rspamd and clamav-milter on the live relay: their headers added, GTUBE and EICAR refused with nothing upstream, rspamd down: 451"
