#!/bin/bash
# t-mta-tls: STARTTLS on the MTA's leg to the protected server.
#   - Postfix offers STARTTLS, the domain requires it (tls starttls): the
#     message arrives encrypted (Postfix's Received: says "using TLS"),
#     the handshake counted in stats tls_sessions.delivery.PROTOCOL;
#   - Postfix stops offering it: the required TLS defers the message with
#     4.7.5, nothing is sent in the clear;
#   - the domain goes back to opportunistic (reload) and the queue is
#     flushed: delivered in the clear.
. "$(dirname "$0")/t-mta-common.inc"
need openssl

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mx.example.com" \
	-keyout "$S/srv-key.pem" -out "$S/srv-cert.pem" >/dev/null 2>&1 ||
	fail "openssl could not make a certificate"
chmod 644 "$S/srv-key.pem"
pf() { tb_exec srv postconf -c "$TB_POSTFIX_CONF" -e "$@" >/dev/null || fail "postconf $*"; }
grep -q '^tlsmgr' "$TB_POSTFIX_CONF/master.cf" ||
	echo "tlsmgr    unix  -       -       n       1000?   1       tlsmgr" >>"$TB_POSTFIX_CONF/master.cf"
pf "smtpd_tls_cert_file=$S/srv-cert.pem" "smtpd_tls_key_file=$S/srv-key.pem" \
	smtpd_tls_security_level=may smtpd_tls_received_header=yes
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"

conf() {
	mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
	tls $1
}"
}
conf starttls
mta_up

send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-tls on" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 maildir_count alice -ge 1 || fail "not delivered over TLS: $(grep -E 'alice|tls' "$TB_MXB_LOG" | tail -n 4)"
f=$(find "$TB_MAILDIR/alice/new" -type f | head -n 1)
grep -A3 "by mx.example.com (Postfix)" "$f" | grep -q "using TLS" ||
	grep -q "(using TLSv1" "$f" || fail "Postfix did not receive it over TLS: $(grep -A4 '^Received' "$f")"
# counted on the delivery leg, by the protocol logged
p=$(grep -Eo ' mta: conn=[0-9]+ upstream=[^ ]+ tls=TLSv1\.[23]/' "$TB_MXB_LOG" | head -n 1 |
	sed 's/.*tls=\(TLSv1\.[23]\)\//\1/')
[ -n "$p" ] || fail "no delivery handshake logged: $(grep 'tls=' "$TB_MXB_LOG" | tail -n 3)"
ctl stats | grep -qx "tls_sessions.delivery.$p=1" ||
	fail "the delivery's $p session not counted: $(ctl stats | grep '^tls_sessions')"

pf smtpd_tls_security_level=none
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"
sleep 1
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-tls required" ||
	fail "message not accepted: $(cat "$S/send.out")"
wait_for -t 20 log_has "to=<alice@example.com> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "required TLS not enforced: $(grep 'alice' "$TB_MXB_LOG" | tail -n 3)"
[ "$(maildir_count alice)" = 1 ] || fail "delivered in the clear although TLS is required"

conf opportunistic
ctl reload >/dev/null || fail "reload refused"
ctl queue flush >/dev/null
wait_for -t 20 maildir_count alice -ge 2 || fail "not delivered after going opportunistic"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list)"

mta_down
pass "STARTTLS to the protected server: required, enforced, opportunistic"
