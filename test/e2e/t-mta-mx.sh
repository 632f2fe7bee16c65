#!/bin/bash
# t-mta-mx: outgoing mail whose client-chosen server is not honoured is
# delivered by the MTA itself, by MX lookup through the box's resolver:
#   - dialled 192.0.2.20 (ext), recipient in example.net: delivered to the
#     MX of example.net (mx.example.net, the 192.0.2.21 sink), never to
#     the dialled server;
#   - example.org has no MX: its A record is used (implicit MX);
#   - a domain that does not exist (NXDOMAIN) bounces at once with 5.1.2;
#   - an address literal of the box itself is never dialled: 5.4.6;
#   - both bounces reach the sender as one DSN each.
. "$(dirname "$0")/t-mta-common.inc"

mta_conf
mta_up

n_ext=$(sink_count "$TB_EXT_DIR")
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "t-mta-mx net" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-mta-mx net")" ]' ||
	fail "not delivered to the MX: $(grep -E 'msgid=|mta:' "$TB_MXB_LOG" | tail -n 5)"
[ "$(sink_count "$TB_EXT_DIR")" = "$n_ext" ] || fail "delivered to the dialled server"
log_has "to=<rcpt@example.net> .*relay=mx.example.net\[192.0.2.21\] route=mx .*disposition=delivered" ||
	fail "no delivered line for the MX"
f=$(sink_file "$TB_MX_DIR" "Subject: t-mta-mx net")
grep -q "by gw.example.com (mxbridge)" "$f" || fail "no Received: of the box"

# implicit MX
send c1 "$TB_EXT_IP4" sender@example.org someone@example.org "t-mta-mx org" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-mta-mx org")" ]' ||
	fail "implicit MX: not delivered to example.org's A record"

# NXDOMAIN: permanent, DSN to the sender
send c1 "$TB_EXT_IP4" sender@example.org user@nowhere.example.net "t-mta-mx nx" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 log_has "to=<user@nowhere.example.net> .*dsn=5.1.2 .*disposition=bounced" ||
	fail "NXDOMAIN did not bounce: $(grep nowhere "$TB_MXB_LOG" | tail -n 3)"
wait_for -t 20 eval '[ -n "$(sink_file "$TB_MX_DIR" "Final-Recipient: rfc822; user@nowhere.example.net")" ]' ||
	fail "no DSN for the NXDOMAIN recipient"
f=$(sink_file "$TB_MX_DIR" "Final-Recipient: rfc822; user@nowhere.example.net")
grep -q '^Status: 5.1.2' "$f" || fail "NXDOMAIN DSN status: $(grep '^Status' "$f")"

# the box's own address is never a next hop
if send c1 "$TB_EXT_IP4" sender@example.org "user@[$TB_BOX_IP4]" "t-mta-mx self"; then
	wait_for -t 20 log_has "to=<user@\[$TB_BOX_IP4\]> .*dsn=5.4.6 .*disposition=bounced" ||
		fail "mail to the box's own address did not bounce 5.4.6"
else
	note "the session refused the address literal: $(cat "$S/send.out")"
fi

wait_for -t 20 queue_empty || fail "queue not empty: $(ctl queue list)"
mta_down
pass "MX delivery, implicit MX, NXDOMAIN 5.1.2, own address 5.4.6"
