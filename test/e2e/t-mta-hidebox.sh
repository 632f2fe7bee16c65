#!/bin/bash
# t-mta-hidebox: hide-box on a protected domain: the MTA's queued
# delivery to the protected server comes from the client's own address
# (IP_TRANSPARENT bind) and says the client's HELO, so the server sees
# the real client even though the message was queued on the box.
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
	hide-box yes
}"
mta_up

n0=$(grep -c "connect from .*\[$TB_C1_IP4\]" "$TB_MAILLOG")
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hidebox" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge 1 ||
	fail "not delivered: $(grep -E 'alice|hide-box|mta: conn' "$TB_MXB_LOG" | tail -n 5)"
log_has "dest=original:$TB_SRV_IP4:25/from:$TB_C1_IP4 " ||
	fail "no per-client destination: $(grep 'dest=original' "$TB_MXB_LOG" | head -n 2)"
log_has "hide-box: (IP_TRANSPARENT|bind)" && fail "transparent bind failed: $(grep hide-box "$TB_MXB_LOG")"
f=$(find "$TB_MAILDIR/alice/new" -type f | head -n 1)
grep -A1 "by mx.example.com (Postfix)" "$f" >/dev/null || fail "no Postfix Received:"
grep -E "^Received: from c1.test.example \(unknown \[$TB_C1_IP4\]\)" "$f" >/dev/null ||
	fail "Postfix did not see the client: $(grep -A1 '^Received: from' "$f" | head -n 4)"
[ "$(grep -c "connect from .*\[$TB_C1_IP4\]" "$TB_MAILLOG")" -gt "$n0" ] ||
	fail "Postfix logged no connection from the client's address"

mta_down
pass "hide-box: the queued delivery comes from the client's address and HELO"
