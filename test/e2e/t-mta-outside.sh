#!/bin/bash
# t-mta-outside: an incoming connection (to the protected server) that
# carries a recipient outside the protected domains:
#   - deliver-via-server yes: the MTA hands it to the protected server
#     (the connection's original destination), which relays it on (the
#     testbed Postfix gets a transport to the mx21 sink): the copy at the
#     sink has passed Postfix;
#   - deliver-via-server no (after a reload): the MTA delivers it itself
#     by MX, straight to mx21, Postfix never sees it;
#   - the protected recipient of the same message goes to Postfix both
#     times.
. "$(dirname "$0")/t-mta-common.inc"

echo "example.net smtp:[$TB_MX_IP4]" >>"$TB_STATE/srv/transport"
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"

conf() {
	mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
	deliver-via-server $1
}"
}
conf yes
mta_up

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,rcpt@example.net \
	"t-mta-outside via" || fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge 1 || fail "alice did not get it"
wait_for -t 30 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-mta-outside via")" ]' ||
	fail "the outside copy did not arrive: $(grep -E 'rcpt@example.net' "$TB_MXB_LOG" "$TB_MAILLOG" | tail -n 4)"
f=$(sink_file "$TB_MX_DIR" "Subject: t-mta-outside via")
grep -q "by mx.example.com (Postfix)" "$f" ||
	fail "deliver-via-server yes: the copy did not pass the protected server"
log_has "to=<rcpt@example.net> .*route=original .*disposition=delivered" ||
	fail "not routed to the original destination: $(grep 'rcpt@example.net' "$TB_MXB_LOG")"

conf no
ctl reload >/dev/null || fail "reload refused"
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,rcpt@example.net \
	"t-mta-outside direct" || fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge 2 || fail "alice did not get the second"
wait_for -t 30 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: t-mta-outside direct")" ]' ||
	fail "the outside copy did not arrive directly"
f=$(sink_file "$TB_MX_DIR" "Subject: t-mta-outside direct")
grep -q "(Postfix)" "$f" && fail "deliver-via-server no: the copy went through Postfix"
log_has "to=<rcpt@example.net> .*relay=mx.example.net\[$TB_MX_IP4\] route=mx .*disposition=delivered" ||
	fail "not delivered by MX: $(grep 'rcpt@example.net' "$TB_MXB_LOG" | tail -n 2)"

wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"
mta_down
pass "outside recipient on an incoming connection: via the server, or by MX"
