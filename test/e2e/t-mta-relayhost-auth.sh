#!/bin/bash
# t-mta-relayhost-auth: the relay host's password goes out only inside
# TLS, and inside verified TLS when the config asks for it.  A fake relay
# host (test/fakesmtp.py, relay.example.org = 192.0.2.30 port 2525 in the
# testbed's outside namespace) offers AUTH PLAIN LOGIN, with or without STARTTLS,
# and records every command it reads with whether TLS was on:
#   A. AUTH offered, no STARTTLS (as after a stripped STARTTLS): no AUTH
#      line reaches it, no MAIL, the message is deferred with the reason;
#   B. the same relay with STARTTLS: the deferred message goes, AUTH inside
#      TLS with the right credentials;
#   C. verify yes, ca-file holding another certificate: the handshake is
#      refused, no AUTH, deferred ("certificate: ...");
#   D. verify yes with the relay's own certificate as ca-file: delivered,
#      AUTH inside TLS;
#   E. auth-plaintext yes, no STARTTLS: AUTH in plain text, as asked.
. "$(dirname "$0")/t-mta-common.inc"
need openssl
PORT=2525

printf 'relayuser s3cret-pass\n' >"$S/relay.secret"
# read again at reload by the daemon's user: its group's (mxbridge.conf(5))
chgrp "$MXB_USER" "$S/relay.secret" && chmod 640 "$S/relay.secret" ||
	fail "cannot give relay.secret to group $MXB_USER"
mkdir -p "$S/right" "$S/wrong"
for d in right wrong; do
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=relay.example.org" \
		-addext "subjectAltName=DNS:relay.example.org" \
		-keyout "$S/$d/key.pem" -out "$S/$d/cert.pem" >"$S/$d/openssl.log" 2>&1 ||
		fail "openssl: $(tail -n 1 "$S/$d/openssl.log")"
done

# fake MODE(plain|tls) CERTDIR LOG: (re)start the fake relay host
fake() { fake_smtp "$1" "$S/$2/cert.pem" "$S/$2/key.pem" "$3" "$PORT"; }
fake_stop() { fake_smtp_stop; }
TB_ATEXIT=fake_stop

# relay_conf EXTRA: the relay host with credentials and EXTRA options
relay_conf() {
	mta_conf "relay-host relay.example.org port $PORT auth \"$S/relay.secret\" $1
domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}"
}
reload() { local o; o=$(ctl reload 2>&1) || fail "reload refused: $o"; }
pending() { ctl queue list | grep -c "state=pending"; }
delivered() { grep -q "tls=$2 MSG $1\$" "$3"; }

# A. AUTH offered without TLS: nothing sent, deferred
relay_conf ""
fake plain right "$S/a.log"
mta_up
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "auth-a" ||
	fail "A: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 log_has "relay.example.org.*offers AUTH without TLS: credentials not sent in plain text" ||
	fail "A: no deferral logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
grep -q "C: EHLO" "$S/a.log" || fail "A: the fake relay saw no EHLO"
grep -q "C: AUTH\|AUTHWITH" "$S/a.log" && fail "A: AUTH sent without TLS: $(grep AUTH "$S/a.log")"
grep -q "C: MAIL" "$S/a.log" && fail "A: message sent without AUTH"
[ "$(pending)" -ge 1 ] || fail "A: message not pending: $(ctl queue list)"

# B. with STARTTLS: AUTH inside TLS, delivered
fake tls right "$S/b.log"
ctl queue flush >/dev/null
wait_for -t 20 delivered auth-a 1 "$S/b.log" || fail "B: not delivered: $(tail -n 8 "$S/b.log")"
grep -q "tls=1 AUTHWITH relayuser s3cret-pass" "$S/b.log" || fail "B: no AUTH inside TLS: $(cat "$S/b.log")"
grep -q "tls=0 C: AUTH" "$S/b.log" && fail "B: AUTH before TLS"
wait_for -t 10 queue_empty || fail "B: queue not empty: $(ctl queue list)"

# C. verify yes, the wrong CA: no AUTH, deferred
relay_conf "verify yes ca-file \"$S/wrong/cert.pem\""
# (a secrets file root alone may read: read at start, not at a reload,
# which is refused naming it; the running configuration stays)
chmod 600 "$S/relay.secret"
out=$(ctl reload 2>&1) && fail "reload with a root-only secrets file accepted"
echo "$out" | grep -q "auth file \"$S/relay.secret\": Permission denied" ||
	fail "root-only secrets file: $out"
chmod 640 "$S/relay.secret"
reload
fake tls right "$S/c.log"
n=$(grep -c "certificate: " "$TB_MXB_LOG")
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "auth-c" ||
	fail "C: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ "$(grep -c "relay.example.org.*certificate: " "$TB_MXB_LOG")" -gt "$n" ]' ||
	fail "C: no certificate failure logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
grep -q "C: STARTTLS" "$S/c.log" || fail "C: no STARTTLS"
grep -q "AUTH" "$S/c.log" && fail "C: AUTH sent to an unverified relay: $(grep AUTH "$S/c.log")"
grep -q "MSG auth-c" "$S/c.log" && fail "C: message sent to an unverified relay"
[ "$(pending)" -ge 1 ] || fail "C: message not pending"

# D. verify yes, the relay's own certificate as CA: delivered
relay_conf "verify yes ca-file \"$S/right/cert.pem\""
reload
fake tls right "$S/d.log"
ctl queue flush >/dev/null
wait_for -t 20 delivered auth-c 1 "$S/d.log" || fail "D: not delivered: $(tail -n 8 "$S/d.log")"
grep -q "tls=1 AUTHWITH relayuser s3cret-pass" "$S/d.log" || fail "D: no AUTH inside TLS"
wait_for -t 10 queue_empty || fail "D: queue not empty: $(ctl queue list)"

# E. auth-plaintext yes: AUTH without TLS, as the config says
relay_conf "auth-plaintext yes"
reload
fake plain right "$S/e.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "auth-e" ||
	fail "E: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 delivered auth-e 0 "$S/e.log" || fail "E: not delivered: $(tail -n 8 "$S/e.log")"
grep -q "tls=0 AUTHWITH relayuser s3cret-pass" "$S/e.log" || fail "E: no AUTH in plain text"
log_has "to=<rcpt@example.net> .*route=relayhost .*disposition=delivered" ||
	fail "no relayhost delivery logged"

fake_stop
mta_down
pass "relay host AUTH: not in plain text, inside TLS, verified certificate, auth-plaintext"
