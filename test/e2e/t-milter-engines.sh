#!/bin/bash
# t-milter-engines: real engines as mxbridge's milters, on the MTA path
# (test/engines.inc starts rspamd, clamd + clamav-milter and opendkim in
# the box's namespace on 127.0.0.1; "milters incoming rspamd clamav dkim",
# "milters outgoing dkim"):
#   1. GTUBE: rspamd's own reply reaches the client (554 5.7.1 Gtube
#      pattern), nothing queued;
#   2. a normal message: delivered with rspamd's headers (X-Spamd-Result,
#      X-Rspamd-Server) and X-Virus-Status: Clean, added by our client;
#   3. EICAR in the text: refused (clamav-milter), nothing queued;
#   4. From in the DKIM domain: the delivered copy carries opendkim's
#      DKIM-Signature and it verifies (test/dkimverify.py) with the key
#      the test made: the header edits did not disturb the signed fields;
#   4b. outgoing mail (the dialled server not honoured: the MTA path,
#      "milters outgoing dkim"), From in the DKIM domain: delivered to
#      the recipient domain's MX, signed, and the signature verifies;
#   5. an engine stopped (default-action tempfail): 451, nothing queued.
. "$(dirname "$0")/t-mta-common.inc"
. "$TB_LIB_DIR/engines.inc"
need rspamd clamd clamav-milter opendkim opendkim-genkey
"$ENG_PYTHON" -c 'import dkim' 2>/dev/null || skip "needs python3-dkim"
LO=127.0.0.1
P_R=11332 P_C=11333 P_D=11334
eng_rspamd box $LO $P_R || fail "rspamd: $ENG_WHY"
eng_clamav box $LO $P_C || fail "clamav: $ENG_WHY"
eng_opendkim box $LO $P_D example.org tb || fail "opendkim: $ENG_WHY"
mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
milter rspamd { socket inet:$LO:$P_R; content-timeout 30s }
milter clamav { socket inet:$LO:$P_C; content-timeout 30s }
milter dkim { socket inet:$LO:$P_D }
milters incoming rspamd clamav dkim
milters outgoing dkim"
mta_up
n0=$(maildir_count alice)

# send_text FROM SUBJECT TEXT: one message; "OK" or "ERR code reply" in send.out
send_text() {
	tb_exec c1 python3 -c '
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=60)
try:
    s.sendmail(sys.argv[2], ["alice@example.com"],
        "Subject: %s\r\n\r\n%s\r\n" % (sys.argv[3], sys.argv[4]))
    print("OK")
except smtplib.SMTPDataError as e:
    print("ERR", e.smtp_code, e.smtp_error.decode())
' "$TB_SRV_IP4" "$1" "$2" "$3" >"$S/send.out" 2>&1
}

# 1. GTUBE
send_text spam@example.net gtube "$ENG_GTUBE"
grep -q "^ERR 554 5.7.1 Gtube pattern" "$S/send.out" || fail "GTUBE: $(cat "$S/send.out")"

# 2. a normal message, with rspamd's and clamav-milter's headers
send c1 "$TB_SRV_IP4" someone@example.net alice@example.com "t-milter-engines plain" ||
	fail "plain: $(cat "$S/send.out")"
wait_for -t 30 maildir_count alice -ge $((n0 + 1)) || fail "plain not delivered"
f=$(grep -rl "Subject: t-milter-engines plain" "$TB_MAILDIR/alice/new" | head -n 1)
grep -q "^X-Spamd-Result: " "$f" || fail "no X-Spamd-Result: $(head -n 30 "$f")"
grep -q "^X-Rspamd-Server: eng-rspamd" "$f" || fail "no X-Rspamd-Server"
grep -q "^X-Virus-Status: Clean" "$f" || fail "no X-Virus-Status"

# 3. EICAR in the text
send_text someone@example.net eicar "this line carries $ENG_EICAR inside it"
grep -q "^ERR 550 5.7.1" "$S/send.out" || fail "EICAR: $(cat "$S/send.out")"
wait_for grep -q "infected by Eicar-Body-Local" "$ENG_CLAMAV_MILTER_LOG" || fail "clamav-milter did not find it"

# 4. signed by opendkim, verifies
n1=$(maildir_count alice)
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-milter-engines dkim" ||
	fail "dkim: $(cat "$S/send.out")"
wait_for -t 30 maildir_count alice -ge $((n1 + 1)) || fail "dkim not delivered"
f=$(grep -rl "Subject: t-milter-engines dkim" "$TB_MAILDIR/alice/new" | head -n 1)
grep -q "^DKIM-Signature: .*d=example.org" "$f" || grep -A3 "^DKIM-Signature:" "$f" | grep -q "d=example.org" ||
	fail "no DKIM-Signature: $(head -n 30 "$f")"
out=$("$ENG_PYTHON" "$TB_REPO/test/dkimverify.py" "$f" tb example.org "$ENG_DKIM_TXTFILE" 2>&1) ||
	fail "DKIM signature does not verify: $out"

# 4b. outgoing, signed on the MTA path, verified at the MX
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "t-milter-engines out-dkim" ||
	fail "out-dkim: $(cat "$S/send.out")"
wait_for -t 30 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-milter-engines out-dkim")" ]' ||
	fail "out-dkim not delivered to the MX: $(grep -E 'msgid=' "$TB_MXB_LOG" | tail -n 3)"
f=$(sink_file "$TB_MX_DIR" "Subject: t-milter-engines out-dkim")
grep -q "^DKIM-Signature:" "$f" || fail "outgoing: no DKIM-Signature: $(head -n 30 "$f")"
out=$("$ENG_PYTHON" "$TB_REPO/test/dkimverify.py" "$f" tb example.org "$ENG_DKIM_TXTFILE" 2>&1) ||
	fail "outgoing DKIM signature does not verify: $out"
grep -q "^X-Spamd-Result" "$f" && fail "outgoing mail went through the incoming milters"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"

# 5. an engine gone: tempfail
eng_stop "clamav-milter-$P_C"
send c1 "$TB_SRV_IP4" someone@example.net alice@example.com "t-milter-engines down" &&
	fail "accepted with clamav-milter down"
grep -Eq "451 (b')?4.7.1" "$S/send.out" || fail "down: $(cat "$S/send.out")"
mta_down
pass "rspamd, clamav-milter and opendkim through the milter client"
