#!/bin/bash
# t-mta-relayhost: with a relay host, mail the MTA delivers itself goes
# there, authenticated, and nowhere else:
#   - outgoing, client-chosen server not honoured: to the relay sink
#     192.0.2.30, with AUTH (the sink announces it; auth-plaintext yes),
#     not to the MX and not to the dialled server;
#   - several queued messages for the relay go over one connection;
#   - the DSN of an incoming bounce goes by the relay host as well.
. "$(dirname "$0")/t-mta-common.inc"

printf 'relayuser s3cret-pass\n' >"$S/relay.secret"
chmod 600 "$S/relay.secret"
# (the sink offers AUTH without STARTTLS: plain-text AUTH has to be
# allowed; t-mta-relayhost-auth checks that it is not by default)
mta_conf "relay-host $TB_RELAY_IP4 port 25 auth \"$S/relay.secret\" auth-plaintext yes
domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}"
mta_up

n_mx=$(sink_count "$TB_MX_DIR")
n_ext=$(sink_count "$TB_EXT_DIR")
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "t-mta-relay one" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(sink_file "$TB_RELAY_DIR" "Subject: t-mta-relay one")" ]' ||
	fail "not at the relay sink: $(grep -E 'msgid=|mta:' "$TB_MXB_LOG" | tail -n 5)"
[ "$(sink_count "$TB_MX_DIR")" = "$n_mx" ] || fail "delivered to the MX too"
[ "$(sink_count "$TB_EXT_DIR")" = "$n_ext" ] || fail "delivered to the dialled server"
log_has "to=<rcpt@example.net> .*relay=\\[$TB_RELAY_IP4\\] route=relayhost .*disposition=delivered" ||
	fail "no relayhost delivery logged: $(grep 'rcpt@example.net' "$TB_MXB_LOG")"
# the connection's own states (common/smtpc.c), then the transaction's
log_has "mta: conn=[0-9]+ upstream=\\[$TB_RELAY_IP4\\] state (ehlo|helo) -> auth" ||
	fail "no AUTH with the relay host: $(grep 'upstream=\[' "$TB_MXB_LOG" | head -n 8)"
log_has "mta: conn=[0-9]+ upstream=\\[$TB_RELAY_IP4\\] state auth -> ready" ||
	fail "AUTH did not succeed"
log_has "dest=relayhost:$TB_RELAY_IP4:25 setup -> mail" ||
	fail "no transaction after the setup"

# several messages, queued while the relay is unreachable, share a
# connection once it is back: hold them with an iptables drop in box
tb_exec box iptables -I OUTPUT -d "$TB_RELAY_IP4" -p tcp --dport 25 -j REJECT --reject-with tcp-reset
for i in 1 2 3 4; do
	send c1 "$TB_EXT_IP4" sender@example.org "r$i@example.net" "t-mta-relay batch $i" ||
		fail "batch $i not accepted: $(cat "$S/send.out")"
done
wait_for -t 20 eval '[ "$(ctl queue list | grep -c "state=pending")" -ge 4 ]' ||
	fail "batch not deferred: $(ctl queue list)"
tb_exec box iptables -D OUTPUT -d "$TB_RELAY_IP4" -p tcp --dport 25 -j REJECT --reject-with tcp-reset
c0=$(grep -c "dest=relayhost:.* init -> resolve" "$TB_MXB_LOG")
ctl queue flush >/dev/null
wait_for -t 20 queue_empty || fail "batch not delivered: $(ctl queue list)"
for i in 1 2 3 4; do
	[ -n "$(sink_file "$TB_RELAY_DIR" "Subject: t-mta-relay batch $i")" ] ||
		fail "batch $i not at the relay"
done
c1=$(grep -c "dest=relayhost:.* init -> resolve" "$TB_MXB_LOG")
[ $((c1 - c0)) -lt 4 ] || fail "every message took its own connection ($((c1 - c0)))"
log_has "dest=relayhost:.* dot -> mail" || fail "no second transaction on a connection"

# an incoming bounce's DSN goes by the relay host too
send c1 "$TB_SRV_IP4" sender@example.org nobody@example.com "t-mta-relay dsn" ||
	fail "incoming message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(sink_file "$TB_RELAY_DIR" "Final-Recipient: rfc822; nobody@example.com")" ]' ||
	fail "the DSN did not go by the relay host"

mta_down
pass "relay host with AUTH, several messages per connection, DSN by the relay"
