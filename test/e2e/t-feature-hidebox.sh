#!/bin/bash
# t-feature-hidebox: hide the box, both ways.
#   - incoming, domain "hide-box yes": the MTA's delivery to the protected
#     server comes from the client's address (Postfix logs a connection
#     from 192.0.2.101); with "hide-box no" from the box's 192.0.2.2;
#   - outgoing live relay, "hide-box outgoing yes": the upstream sees the
#     client's address (the fake upstream logs its peers), the replies
#     coming back through the transparent socket; a port block's
#     "hide-box outgoing no" puts the box's address back for its port.
. "$(dirname "$0")/t-proxy-common.inc"

# hide_conf DOMAIN-HIDE GLOBAL-OUT [PORT-OUT]: the daemon config
hide_conf() {
	local port=
	[ -z "${3:-}" ] || port="port \"p0\" { hide-box outgoing $3 }"
	mxb_conf_head >"$S/run.conf"
	cat >>"$S/run.conf" <<CONF
domain "example.com" {
	server $TB_SRV_IP4 port 25
	hide-box $1
}
client-server default honour
hide-box outgoing $2
$port
match client $TB_PREFIX4 relay
CONF
}
accepts() { grep -c "^accept [0-9]* from $1\$" "$S/fake.log"; }
# incoming USER SUBJECT SEEN UNSEEN: one message from c1 to USER@example.com
# through the MTA path; Postfix must log a new connection from the address
# SEEN and none from UNSEEN
incoming() {
	local seen0 unseen0
	seen0=$(maillog_connects "$3") unseen0=$(maillog_connects "$4")
	tb_smtp_send c1 "$TB_SRV_IP4" sender@example.org "$1@example.com" "$2" ||
		fail "incoming message not accepted: $(tail -n 2 "$TB_STATE/smtp.out")"
	wait_for -t 20 maildir_count "$1" -ge 1 || fail "$2: not delivered"
	[ "$(maillog_connects "$3")" -gt "$seen0" ] || fail "$2: Postfix logged no connection from $3"
	[ "$(maillog_connects "$4")" = "$unseen0" ] || fail "$2: Postfix logged a connection from $4"
}

hide_conf yes yes
proxy_up

# 1. incoming, hide-box yes: Postfix sees the client
incoming alice "t-feature-hidebox yes" "$TB_C1_IP4" "$TB_BOX_IP4"
grep -rqs "^Received: from c1.test.example (unknown \[$TB_C1_IP4\])" "$TB_MAILDIR/alice/new" ||
	fail "Postfix's Received: does not name the client"

# 2. incoming, hide-box no: Postfix sees the box
hide_conf no yes
mxb_reload
incoming bob "t-feature-hidebox no" "$TB_BOX_IP4" "$TB_C1_IP4"

# 3. outgoing live relay, hide-box outgoing yes: the upstream sees the client
fake_up
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net \
	--header "Subject: t-feature-hidebox out" ||
	fail "live relay with hide-box: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
wait_for sink_count "$S/fake" -ge 1 || fail "message not at the upstream"
[ "$(accepts "$TB_C1_IP4")" = 1 ] || fail "the upstream did not see the client: $(cat "$S/fake.log")"
[ "$(accepts "$TB_BOX_IP4")" = 0 ] || fail "the upstream saw the box"
log_has "session=[0-9]+ upstream tls=opportunistic hide-box=yes" || fail "hide-box not logged"

# 4. a port block turns it off for its port
hide_conf no yes no
mxb_reload
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net ||
	fail "live relay without hide-box: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
wait_for sink_count "$S/fake" -ge 2 || fail "second message not at the upstream"
[ "$(accepts "$TB_BOX_IP4")" = 1 ] || fail "the upstream did not see the box: $(cat "$S/fake.log")"
[ "$(accepts "$TB_C1_IP4")" = 1 ] || fail "the upstream saw the client again"

fake_down
mxb_down
pass "hide-box: incoming delivery and outgoing live relay from the client's address, the box's when off"
