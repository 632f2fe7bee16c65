#!/bin/bash
# t-mta-tlspolicy: "tls-policy" levels for the MTA's delivery, against a
# fake relay host (test/fakesmtp.py, relay.example.org port 2525) with
# certificates made here by a test CA, and the MX sink of example.net:
#   A. verify, a certificate of the CA naming relay.example.org:
#      delivered, logged tls=verified;
#   B. verify, the CA's certificate for another name: deferred, the
#      reason logged, nothing sent;
#   C. verify, a self-signed certificate (unknown CA): deferred, the
#      same; the names of "match" are checked instead of the host's;
#   D. encrypt, the unknown CA: delivered, tls=anonymous;
#   E. encrypt, no STARTTLS offered: deferred; then none: delivered in
#      plain text, no STARTTLS sent although offered;
#   E2. a reload while a delivery connection is busy: the message after
#      it goes over a new connection under the new level, not the old;
#   F. verify on-failure bounce: bounced with 5.7.5;
#   G. a domain entry on the MX route (example.net encrypt) to a server
#      without STARTTLS: deferred; "may" delivers it;
#   H. min-protocol TLSv1.3 to a server of TLS 1.2 at most: deferred;
#      the default (TLS 1.2) delivers, with the cipher list asked.
. "$(dirname "$0")/t-mta-common.inc"
need openssl
PORT=2525

# the test CA and its certificates; "self" signs itself
mk() {	# mk NAME CN [SIGNER]
	mkdir -p "$S/$1"
	if [ -z "${3:-}" ]; then
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" \
			-addext "subjectAltName=DNS:$2" -addext "basicConstraints=critical,CA:TRUE" \
			-keyout "$S/$1/key.pem" -out "$S/$1/cert.pem" >"$S/$1/openssl.log" 2>&1
	else
		openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" \
			-keyout "$S/$1/key.pem" -out "$S/$1/req.pem" >"$S/$1/openssl.log" 2>&1 &&
		printf 'subjectAltName=DNS:%s\n' "$2" >"$S/$1/ext.cnf" &&
		openssl x509 -req -in "$S/$1/req.pem" -CA "$S/$3/cert.pem" \
			-CAkey "$S/$3/key.pem" -CAcreateserial -days 2 \
			-extfile "$S/$1/ext.cnf" -out "$S/$1/cert.pem" >>"$S/$1/openssl.log" 2>&1
	fi || fail "openssl $1: $(tail -n 2 "$S/$1/openssl.log")"
}
mk ca "mxbridge test CA"
mk good relay.example.org ca
mk badname other.example ca
mk self relay.example.org

fake() { fake_smtp "$1" "$S/$2/cert.pem" "$S/$2/key.pem" "$3" "$PORT"; }
TB_ATEXIT=fake_smtp_stop

relay_conf() {
	mta_conf "relay-host relay.example.org port $PORT
tls-policy ca-file \"$S/ca/cert.pem\"
$1
domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}"
}
reload() { local o; o=$(ctl reload 2>&1) || fail "reload refused: $o"; }
delivered() { grep -q "tls=$2 MSG $1\$" "$3"; }
pending() { ctl queue list | grep -c "state=pending"; }
certfails() { grep -c "relay.example.org.*(verify).*certificate: " "$TB_MXB_LOG"; }

# A. verify with the CA's certificate for the right name
relay_conf "tls-policy host relay.example.org verify"
mta_up
fake tls good "$S/a.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-a" ||
	fail "A: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 delivered tls-a 1 "$S/a.log" || fail "A: not delivered: $(tail -n 8 "$S/a.log")"
wait_for -t 10 log_has "to=<rcpt@example.net> .*disposition=delivered tls=verified" ||
	fail "A: no tls=verified on the delivered line: $(grep 'rcpt@example.net' "$TB_MXB_LOG" | tail -n 2)"
log_has "mta: conn=[0-9]+ relay=relay.example.org\\[$TB_RELAY_IP4\\] tls=verified level=verify protocol=TLS" ||
	fail "A: no verified session logged"

# B. the CA's certificate, another name: no message goes
fake tls badname "$S/b.log"
n=$(certfails)
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-b" ||
	fail "B: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 eval '[ "$(certfails)" -gt "$n" ]' ||
	fail "B: no certificate failure logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
grep -q "MSG tls-b" "$S/b.log" && fail "B: message sent to a server with the wrong name"
grep -q "C: MAIL" "$S/b.log" && fail "B: MAIL sent after a failed verification"
log_has "to=<rcpt@example.net> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "B: not deferred with 4.7.5"

# C. an unknown CA: deferred the same way; then "match" names another
# name that the CA's certificate for other.example carries: delivered
fake tls self "$S/c.log"
n=$(certfails)
ctl queue flush >/dev/null
wait_for -t 20 eval '[ "$(certfails)" -gt "$n" ]' ||
	fail "C: no certificate failure logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
grep -q "MSG tls-b" "$S/c.log" && fail "C: message sent to an unknown CA's server"
relay_conf "tls-policy host relay.example.org verify match \"mx.example.org other.example\""
reload
fake tls badname "$S/c2.log"
ctl queue flush >/dev/null
wait_for -t 20 delivered tls-b 1 "$S/c2.log" ||
	fail "C: match: not delivered: $(tail -n 8 "$S/c2.log")"

# D. encrypt: any certificate, TLS required
relay_conf "tls-policy host relay.example.org encrypt"
reload
fake tls self "$S/d.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-d" ||
	fail "D: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 delivered tls-d 1 "$S/d.log" || fail "D: not delivered: $(tail -n 8 "$S/d.log")"
wait_for -t 10 log_has "disposition=delivered tls=anonymous" ||
	fail "D: no tls=anonymous on the delivered line"

# E. encrypt without STARTTLS: deferred; none: plain text, as asked
fake plain good "$S/e.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-e" ||
	fail "E: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 log_has "relay.example.org\\[$TB_RELAY_IP4\\] \\(encrypt\\): upstream does not offer STARTTLS" ||
	fail "E: missing STARTTLS not logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
grep -q "C: MAIL" "$S/e.log" && fail "E: MAIL sent without TLS"
relay_conf "tls-policy host relay.example.org none"
reload
fake tls good "$S/e2.log"
ctl queue flush >/dev/null
wait_for -t 20 delivered tls-e 0 "$S/e2.log" || fail "E: none: not delivered in plain text: $(tail -n 8 "$S/e2.log")"
grep -q "C: STARTTLS" "$S/e2.log" && fail "E: STARTTLS sent with level none"
wait_for -t 10 queue_empty || fail "E: queue not empty: $(ctl queue list)"

# E2. a reload while a delivery connection is open: one connection at a
# time (concurrency 1), kept busy 3 s by a slow message under "none";
# the reload to "encrypt" comes meanwhile, and the message sent after it
# must go over a new connection with TLS, not the old plain-text one
MTA_QUEUE_EXTRA="concurrency 1" relay_conf "tls-policy host relay.example.org none"
reload
: >"$S/e2.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-e2-slow" ||
	fail "E2: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 grep -q "tls=0 MSG tls-e2-slow" "$S/e2.log" || fail "E2: the slow message did not arrive"
MTA_QUEUE_EXTRA="concurrency 1" relay_conf "tls-policy host relay.example.org encrypt"
reload
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-e2-after" ||
	fail "E2: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 grep -q "MSG tls-e2-after" "$S/e2.log" || fail "E2: not delivered: $(tail -n 8 "$S/e2.log")"
delivered tls-e2-after 1 "$S/e2.log" ||
	fail "E2: sent without TLS over the connection opened before the reload: $(grep -E 'OPEN|MSG|STARTTLS' "$S/e2.log")"
[ "$(grep -c ' OPEN ' "$S/e2.log")" -ge 2 ] || fail "E2: one connection for both: $(grep -E 'OPEN|MSG' "$S/e2.log")"
wait_for -t 10 queue_empty || fail "E2: queue not empty: $(ctl queue list)"

# F. verify, on-failure bounce: a permanent failure
relay_conf "tls-policy host relay.example.org verify on-failure bounce"
reload
fake tls self "$S/f.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-f" ||
	fail "F: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 log_has "to=<rcpt@example.net> .*dsn=5.7.5 .*disposition=bounced" ||
	fail "F: not bounced: $(grep 'rcpt@example.net' "$TB_MXB_LOG" | tail -n 2)"
grep -q "MSG tls-f" "$S/f.log" && fail "F: message sent to an unknown CA's server"
fake_smtp_stop

# G. the MX route: a domain entry; the MX sink offers no STARTTLS
mta_conf "tls-policy domain example.net encrypt"
reload
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-g" ||
	fail "G: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 log_has "mx.example.net\\[$TB_MX_IP4\\] \\(encrypt\\): upstream does not offer STARTTLS" ||
	fail "G: missing STARTTLS not logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
[ -z "$(sink_file "$TB_MX_DIR" "Subject: tls-g")" ] || fail "G: delivered without TLS"
mta_conf "tls-policy domain example.net may"
reload
ctl queue flush >/dev/null
wait_for -t 20 eval '[ -n "$(sink_file "$TB_MX_DIR" "Subject: tls-g")" ]' ||
	fail "G: may: not delivered to the MX"

# H. the oldest protocol allowed, and the cipher list
relay_conf "tls-policy host relay.example.org encrypt
tls-policy min-protocol TLSv1.3"
reload
fake tls12 good "$S/h.log"
send c1 "$TB_EXT_IP4" sender@example.org rcpt@example.net "tls-h" ||
	fail "H: message not accepted: $(cat "$S/send.out")"
wait_for -t 20 grep -q TLSFAIL "$S/h.log" || fail "H: no refused handshake: $(tail -n 5 "$S/h.log")"
wait_for -t 20 log_has "relay.example.org\\[$TB_RELAY_IP4\\] \\(encrypt\\): TLS handshake or read failed" ||
	fail "H: failure not logged: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 5)"
grep -q "MSG tls-h" "$S/h.log" && fail "H: sent over TLS 1.2"
relay_conf "tls-policy host relay.example.org encrypt
tls-policy ciphers \"ECDHE+AESGCM\""
reload
ctl queue flush >/dev/null
wait_for -t 20 delivered tls-h 1 "$S/h.log" || fail "H: TLS 1.2: not delivered: $(tail -n 5 "$S/h.log")"
log_has "tls=anonymous level=encrypt protocol=TLSv1.2/ECDHE-[A-Z]+-AES[0-9]+-GCM" ||
	fail "H: not TLS 1.2 with the cipher asked: $(grep 'level=encrypt' "$TB_MXB_LOG" | tail -n 2)"

mta_down
pass "tls-policy: verify (name, CA, match), encrypt, none, on-failure bounce, a domain's entry, min-protocol, ciphers"
