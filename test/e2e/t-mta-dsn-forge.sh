#!/bin/bash
# t-mta-dsn-forge: nobody can forge fields of the DSN the box sends.
#   - RCPT ... ORCPT=rfc822;x+0D+0AAction:+20delivered... (xtext that
#     decodes to CR LF and fields of its own) is refused at RCPT with
#     501 5.5.4, and so is an ENVID that decodes to controls, at MAIL;
#   - a protected server (the fake of smuggle.py, hostile550) refuses two
#     recipients with a multi-line 550 full of ESC sequences, quotes,
#     "Action: delivered", C0/C1/DEL and malformed UTF-8: the DSN that
#     reaches the sender (its domain is the protected one: route original,
#     to the same fake, stored byte for byte) has only CRLF line ends, no
#     ESC, exactly one per-recipient group per refused recipient and
#     nothing that is not a field; its Diagnostic-Code keeps the text
#     with '?' for the controls;
#   - the log lines of those bounces parse as key=value fields, each key
#     once, disposition=bounced: the server's quotes are escaped.
. "$(dirname "$0")/t-mta-common.inc"

FAKE_IP=192.0.2.22
CHECK=$TB_REPO/test/textcheck.py
mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}
domain \"hostile.example\" {
	server $FAKE_IP port 25
}"

tb_exec out ip addr replace "$FAKE_IP/24" dev eth0 2>/dev/null ||
	tb_exec out ip addr add "$FAKE_IP/24" dev eth0
mkdir -p "$S/fake"
ip netns exec "$(tb_ns out)" python3 "$TB_REPO/test/smuggle.py" serve "$FAKE_IP" 25 \
	--dir "$S/fake" --raw --mode hostile550 >"$S/fake.log" 2>&1 &
tbd_record_pid out fake "$!"
wait_for tbd_listening_tcp out "$FAKE_IP:25" 25 ||
	fail "fake server did not start: $(tail -n 3 "$S/fake.log")"
mta_up

# 1. hostile ORCPT and ENVID: refused at the door with a clear reply
send c1 "$FAKE_IP" sender@hostile.example ok@hostile.example "t-mta-dsn-forge orcpt" \
	"" "NOTIFY=FAILURE ORCPT=rfc822;x+0D+0AAction:+20delivered+0D+0A+0D+0AFinal-Recipient:+20rfc822;+20forged@hostile.example" &&
	fail "a hostile ORCPT was accepted"
grep -q "^ERR RCPT 501 .*5.5.4 Invalid ORCPT" "$S/send.out" ||
	fail "hostile ORCPT: not 501 5.5.4: $(cat "$S/send.out")"
send c1 "$FAKE_IP" sender@hostile.example ok@hostile.example "t-mta-dsn-forge envid" \
	"ENVID=x+0D+0AX-Forged:+20yes" && fail "a hostile ENVID was accepted"
grep -q "^ERR MAIL 501 .*5.5.4 Invalid ENVID" "$S/send.out" ||
	fail "hostile ENVID: not 501 5.5.4: $(cat "$S/send.out")"

# 2. a hostile 550 for two recipients: the DSN keeps its shape
send c1 "$FAKE_IP" sender@hostile.example ok@hostile.example,bad1@hostile.example,bad2@hostile.example \
	"t-mta-dsn-forge reply" "RET=HDRS ENVID=env+2Bforge" "NOTIFY=FAILURE ORCPT=rfc822;orig+20x@hostile.example" ||
	fail "message not accepted: $(cat "$S/send.out")"
dsn_raw() {
	local f
	for f in "$S"/fake/*; do
		case $f in *.raw|*.tmp) continue ;; esac
		head -n 1 "$f" | grep -q '^MAIL FROM:<>' && [ -f "$f.raw" ] &&
			{ echo "$f.raw"; return 0; }
	done
	return 1
}
wait_for -t 30 dsn_raw || fail "no DSN at the fake server: $(grep -E 'bad1|dsn' "$TB_MXB_LOG" | tail -n 5)"
raw=$(dsn_raw)
python3 "$CHECK" dsn "$raw" bad1@hostile.example,bad2@hostile.example >"$S/check.out" 2>&1 ||
	fail "DSN structure: $(head -n 5 "$S/check.out")"
grep -q '^Diagnostic-Code: smtp; 550-5.1.1 ?\[2J?\]0;pwned??\[31mred?\[0m "quoted"' "$raw" ||
	fail "Diagnostic-Code not kept and cleaned: $(grep -A3 '^Diagnostic-Code' "$raw" | head -n 4)"
grep -q '^Original-Recipient: rfc822;orig x@hostile.example' "$raw" ||
	fail "a printable ORCPT is not kept: $(grep '^Original-Recipient' "$raw")"
grep -Eq '^Action: delivered' "$raw" && fail "the server's 'Action: delivered' became a field"

# 3. the bounce lines in the log: the server's text cannot add fields
for r in bad1 bad2; do
	python3 "$CHECK" log "$TB_MXB_LOG" "to=<$r@hostile.example>" disposition=bounced \
		>"$S/check.out" 2>&1 || fail "log line of $r: $(head -n 3 "$S/check.out")"
done
log_has 'disposition=bounced (tls=[a-z]+ )?status=bounced \(550-5.1.1 \?\[2J\?\]0;pwned\?\?\[31mred\?\[0m \\"quoted\\" disposition=delivered' ||
	fail "status= not escaped as expected: $(grep 'to=<bad1' "$TB_MXB_LOG" | tail -n 1)"

mta_down
pass "hostile ORCPT/ENVID refused at the door (501 5.5.4); a hostile 550 yields one DSN group per recipient, CRLF only, no ESC, and log lines with their own fields only"
