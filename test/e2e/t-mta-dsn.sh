#!/bin/bash
# t-mta-dsn: a recipient the protected server rejects (550 unknown user)
# after the box queued the message gets the sender a DSN, RFC 3464:
#   - RET=FULL (and by default): multipart/report; report-type=
#     delivery-status, a human part, message/delivery-status with
#     Reporting-MTA, Arrival-Date, Original-Envelope-Id, Final-Recipient,
#     Original-Recipient (ORCPT), Action: failed, Status: 5.1.1,
#     Remote-MTA, Diagnostic-Code: smtp; 550 ..., and the whole original
#     as message/rfc822;
#   - RET=HDRS: only the headers, as text/rfc822-headers;
#   - NOTIFY=NEVER: no DSN at all;
#   - the good recipient of the same message is delivered;
#   - the DSN has the null sender and goes by MX (example.org has no MX:
#     its A record, the mx21 sink).
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}"
mta_up

# the DSN for $1 (subject) at the mx21 sink
dsn_for() { sink_file "$TB_MX_DIR" "Subject: $1"; }

# 1. RET=FULL with ENVID and ORCPT
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,nobody@example.com \
	"t-mta-dsn full" "RET=FULL ENVID=env+2Bfull" "ORCPT=rfc822;nobody+2Borig@example.com" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge 1 || fail "alice did not get the message"
wait_for -t 20 eval '[ -n "$(grep -rl "Final-Recipient: rfc822; nobody@example.com" "$TB_MX_DIR" 2>/dev/null)" ]' ||
	fail "no DSN at the MX sink: $(grep -E 'dsn|nobody' "$TB_MXB_LOG" | tail -n 5)"
f=$(grep -rl "Final-Recipient: rfc822; nobody@example.com" "$TB_MX_DIR" | head -n 1)
for re in \
	'^Content-Type: multipart/report; report-type=delivery-status;' \
	'^Subject: Undelivered Mail Returned to Sender' \
	'^To: <sender@example.org>' \
	'^Auto-Submitted: auto-replied' \
	'^Content-Type: text/plain' \
	'^Content-Type: message/delivery-status' \
	'^Reporting-MTA: dns; gw.example.com' \
	'^Arrival-Date: ' \
	'^Original-Envelope-Id: env\+2Bfull' \
	'^Final-Recipient: rfc822; nobody@example.com' \
	'^Original-Recipient: rfc822;nobody\+orig@example.com' \
	'^Action: failed' \
	'^Status: 5\.1\.1' \
	'^Remote-MTA: dns; (mx\.example\.com|\[?192\.0\.2\.10\]?)' \
	'^Diagnostic-Code: smtp; 550 5\.1\.1 ' \
	'^Content-Type: message/rfc822' \
	'^Subject: t-mta-dsn full' \
	'^hello from the testbed' ; do
	grep -Eq -- "$re" "$f" || fail "DSN lacks /$re/: $(cat "$f")"
done
grep -q "Final-Recipient: rfc822; alice@example.com" "$f" &&
	fail "the DSN names the delivered recipient"
grep -Eqi '^X-Mail-Args: *FROM:<>|MAIL FROM:<>' "$f" ||
	grep -rqs 'MAIL FROM:<>' "$TB_STATE/out/mx21.log" ||
	log_has "queued dsn to=<sender@example.org>" || fail "the DSN is not from <>"
log_has "to=<nobody@example.com> .*dsn=5.1.1 .*disposition=bounced" ||
	fail "no bounced line logged"

# 2. RET=HDRS: headers only
send c1 "$TB_SRV_IP4" sender@example.org nobody@example.com "t-mta-dsn hdrs" \
	"RET=HDRS" "NOTIFY=FAILURE" || fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(dsn_for "t-mta-dsn hdrs")" ]' || fail "no DSN for RET=HDRS"
f=$(dsn_for "t-mta-dsn hdrs")
grep -q '^Content-Type: text/rfc822-headers' "$f" || fail "RET=HDRS: not text/rfc822-headers: $(cat "$f")"
grep -q '^Content-Type: message/rfc822' "$f" && fail "RET=HDRS: the message is attached"
grep -q '^hello from the testbed' "$f" && fail "RET=HDRS: the body is in the DSN"

# 3. NOTIFY=NEVER: nothing
n=$(sink_count "$TB_MX_DIR")
send c1 "$TB_SRV_IP4" sender@example.org nobody@example.com "t-mta-dsn never" \
	"" "NOTIFY=NEVER" || fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval 'grep -q "to=<nobody@example.com> .*disposition=bounced" "$TB_MXB_LOG" &&
	[ "$(grep -c "to=<nobody@example.com> .*disposition=bounced" "$TB_MXB_LOG")" -ge 3 ]' ||
	fail "third bounce not logged"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"
sleep 2
[ "$(sink_count "$TB_MX_DIR")" = "$n" ] || fail "a DSN was sent despite NOTIFY=NEVER"
[ "$(stat_is dsn_sent)" = 2 ] || fail "dsn_sent=$(stat_is dsn_sent), want 2"
[ "$(maildir_count alice)" = 1 ] || fail "alice got $(maildir_count alice) messages"

mta_down
pass "DSN on a 5xx at delivery: RFC 3464 structure, RET=FULL/HDRS, NOTIFY=NEVER"
