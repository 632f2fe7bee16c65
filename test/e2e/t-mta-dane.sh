#!/bin/bash
# t-mta-dane: "tls-policy ... dane|dane-only" (RFC 7672) for the MTA's MX
# deliveries.  The test signs a zone of its own, dane.example, with
# ldns-keygen/ldns-signzone, serves it and the unsigned plain.example
# with nsd (out namespace, 192.0.2.54), and validates with unbound on
# 127.0.0.1 in the box namespace (the box's resolv.conf points there;
# its only trust anchor is the test zone's DS).  Every MX host is one
# fake SMTP server with STARTTLS (test/fakesmtp.py, 192.0.2.31 port 25)
# and a certificate made here:
#   A. good.dane.example, TLSA 3 1 1 of the server's key: delivered,
#      logged tls=dane (and the record that matched);
#   B. bad.dane.example, TLSA 3 1 1 of another key: deferred, the
#      reason logged, nothing sent;
#   C. plain.example, unsigned: "may": delivered over TLS, not tls=dane;
#   D. bogus.dane.example, its TLSA record altered after signing
#      (unbound answers SERVFAIL): deferred, never downgraded;
#   E. none.dane.example, signed, no TLSA: dane-only defers;
#   F. ta.dane.example, TLSA 2 0 1 of the CA that signed the second fake
#      MX's certificate (192.0.2.32, naming mx-ta.dane.example):
#      delivered, tls=dane, matched at depth 1; taname.dane.example,
#      the same record at a name the certificate does not carry:
#      deferred (DANE-TA checks the name, DANE-EE does not);
#   G. pkix.dane.example, only a PKIX-EE record (unusable for SMTP):
#      TLS required, not authenticated: delivered, tls=anonymous;
#   H. huge.dane.example, 500 TLSA records, none matching (a 24 kB
#      answer, over TCP): 64 used, deferred, the rest said unused;
#   I. direct.dane.example, no MX (validated), its own address and
#      TLSA record: delivered to it, tls=dane;
#   J. trust-ad no: the resolver's AD bit is not believed, so
#      good.dane.example under dane-only is deferred too.
. "$(dirname "$0")/t-mta-common.inc"
need openssl nsd unbound ldns-keygen ldns-signzone
MX_IP=192.0.2.31
MX2_IP=192.0.2.32
NS_IP=192.0.2.54
D=$S/dns
mkdir -p "$D"
chmod 755 "$D"

# the fake MX's key and certificate, and another key for the mismatch
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mx.dane.example" \
	-keyout "$D/key.pem" -out "$D/cert.pem" >"$D/openssl.log" 2>&1 ||
	fail "openssl: $(tail -n 2 "$D/openssl.log")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/other.pem" \
	>>"$D/openssl.log" 2>&1 || fail "openssl: $(tail -n 2 "$D/openssl.log")"
# a CA and the second MX's certificate it signs (the chain served)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dane test CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-keyout "$D/ca.key" -out "$D/ca.pem" >>"$D/openssl.log" 2>&1 &&
openssl req -newkey rsa:2048 -nodes -subj "/CN=mx-ta.dane.example" \
	-keyout "$D/ta.key" -out "$D/ta.req" >>"$D/openssl.log" 2>&1 &&
printf 'subjectAltName=DNS:mx-ta.dane.example\n' >"$D/ta.ext" &&
openssl x509 -req -in "$D/ta.req" -CA "$D/ca.pem" -CAkey "$D/ca.key" \
	-CAcreateserial -days 2 -extfile "$D/ta.ext" -out "$D/ta.crt" >>"$D/openssl.log" 2>&1 ||
	fail "openssl CA: $(tail -n 2 "$D/openssl.log")"
cat "$D/ta.crt" "$D/ca.pem" >"$D/ta-chain.pem"
CA=$(openssl x509 -in "$D/ca.pem" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
spki_sha256() { openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1; }
GOOD=$(openssl x509 -in "$D/cert.pem" -noout -pubkey | spki_sha256)
BAD=$(openssl pkey -in "$D/other.pem" -pubout | spki_sha256)
[ ${#GOOD} = 64 ] && [ ${#BAD} = 64 ] && [ "$GOOD" != "$BAD" ] ||
	fail "no TLSA digests: '$GOOD' '$BAD'"

# the signed zone; mx-bogus's TLSA is changed after signing
cat >"$D/dane.example.zone" <<ZONE
\$ORIGIN dane.example.
\$TTL 300
@	IN SOA ns.dane.example. hostmaster.dane.example. 1 3600 600 86400 300
@	IN NS ns.dane.example.
ns	IN A $NS_IP
good	IN MX 10 mx-good.dane.example.
bad	IN MX 10 mx-bad.dane.example.
bogus	IN MX 10 mx-bogus.dane.example.
none	IN MX 10 mx-none.dane.example.
mx-good	IN A $MX_IP
mx-bad	IN A $MX_IP
mx-bogus IN A $MX_IP
mx-none	IN A $MX_IP
_25._tcp.mx-good IN TLSA 3 1 1 $GOOD
_25._tcp.mx-bad	IN TLSA 3 1 1 $BAD
_25._tcp.mx-bogus IN TLSA 3 1 1 $BAD
ta	IN MX 10 mx-ta.dane.example.
taname	IN MX 10 mx-taname.dane.example.
mx-ta	IN A $MX2_IP
mx-taname IN A $MX2_IP
_25._tcp.mx-ta IN TLSA 2 0 1 $CA
_25._tcp.mx-taname IN TLSA 2 0 1 $CA
pkix	IN MX 10 mx-pkix.dane.example.
mx-pkix	IN A $MX_IP
_25._tcp.mx-pkix IN TLSA 1 1 1 $GOOD
direct	IN A $MX_IP
_25._tcp.direct IN TLSA 3 1 1 $GOOD
huge	IN MX 10 mx-huge.dane.example.
mx-huge	IN A $MX_IP
ZONE
for i in $(seq 1 500); do
	printf '_25._tcp.mx-huge IN TLSA 3 1 1 %064d\n' "$i"
done >>"$D/dane.example.zone"
cat >"$D/plain.example.zone" <<ZONE
\$ORIGIN plain.example.
\$TTL 300
@	IN SOA ns.plain.example. hostmaster.plain.example. 1 3600 600 86400 300
@	IN NS ns.plain.example.
ns	IN A $NS_IP
@	IN MX 10 mx.plain.example.
mx	IN A $MX_IP
_25._tcp.mx IN TLSA 3 1 1 $BAD
ZONE
(cd "$D" && ldns-keygen -a ECDSAP256SHA256 -k dane.example) >"$D/keygen.out" 2>&1 ||
	fail "ldns-keygen: $(cat "$D/keygen.out")"
K=$D/$(head -n 1 "$D/keygen.out")
[ -f "$K.ds" ] || fail "ldns-keygen made no $K.ds"
ldns-signzone -f "$D/dane.example.zone.signed" "$D/dane.example.zone" "$K" \
	>"$D/sign.out" 2>&1 || fail "ldns-signzone: $(cat "$D/sign.out")"
grep -q "RRSIG	TLSA" "$D/dane.example.zone.signed" || fail "zone not signed"
# D: the signed record of mx-bogus now says GOOD: its RRSIG no longer fits
sed -i "/^_25\._tcp\.mx-bogus\.dane\.example\..*TLSA	3 1 1 /s/$BAD/$GOOD/" \
	"$D/dane.example.zone.signed"
grep -q "^_25\._tcp\.mx-bogus\.dane\.example\..*TLSA	3 1 1 $GOOD" "$D/dane.example.zone.signed" ||
	fail "the bogus record was not altered: $(grep mx-bogus "$D/dane.example.zone.signed" | head -n 3)"

# nsd in out, unbound in box; ended by their pids at exit
ip -n "$(tb_ns out)" addr add "$MX_IP/24" dev eth0
ip -n "$(tb_ns out)" addr add "$MX2_IP/24" dev eth0
ip -n "$(tb_ns out)" addr add "$NS_IP/24" dev eth0
cat >"$D/nsd.conf" <<CONF
server:
	ip-address: $NS_IP
	port: 53
	do-ip6: no
	username: ""
	chroot: ""
	zonesdir: "$D"
	pidfile: "$D/nsd.pid"
	logfile: "$D/nsd.log"
	database: ""
	zonelistfile: "$D/zone.list"
	xfrdfile: "$D/xfrd.state"
	xfrdir: "$D"
	server-count: 1
	verbosity: 2
remote-control:
	control-enable: no
zone:
	name: dane.example
	zonefile: dane.example.zone.signed
zone:
	name: plain.example
	zonefile: plain.example.zone
CONF
cat >"$D/unbound.conf" <<CONF
server:
	interface: 127.0.0.1
	port: 53
	do-ip6: no
	access-control: 127.0.0.0/8 allow
	username: ""
	chroot: ""
	directory: "$D"
	pidfile: "$D/unbound.pid"
	use-syslog: no
	logfile: "$D/unbound.log"
	verbosity: 1
	val-log-level: 2
	do-daemonize: no
	module-config: "validator iterator"
	trust-anchor-file: "$K.ds"
	cache-max-ttl: 0
	cache-max-negative-ttl: 0
remote-control:
	control-enable: no
stub-zone:
	name: "dane.example"
	stub-addr: $NS_IP
stub-zone:
	name: "plain.example"
	stub-addr: $NS_IP
CONF
NSD_PID= UNBOUND_PID=
FAKE2=
dns_stop() {
	fake_smtp_stop
	[ -z "$FAKE2" ] || { kill "$FAKE2" 2>/dev/null; wait "$FAKE2" 2>/dev/null; }
	[ -z "$UNBOUND_PID" ] || { kill "$UNBOUND_PID" 2>/dev/null; wait "$UNBOUND_PID" 2>/dev/null; }
	[ -z "$NSD_PID" ] || { kill "$NSD_PID" 2>/dev/null; wait "$NSD_PID" 2>/dev/null; }
	UNBOUND_PID= NSD_PID=
}
TB_ATEXIT=dns_stop
ip netns exec "$(tb_ns out)" nsd -d -c "$D/nsd.conf" </dev/null >"$D/nsd.out" 2>&1 &
NSD_PID=$!
tb_exec box ip link set lo up
ip netns exec "$(tb_ns box)" unbound -d -c "$D/unbound.conf" </dev/null >"$D/unbound.out" 2>&1 &
UNBOUND_PID=$!
wait_for -t 10 tb_dig out A ns.dane.example "$NS_IP" ||
	fail "nsd does not answer: $(tail -n 3 "$D/nsd.out" "$D/nsd.log" 2>/dev/null)"
wait_for -t 10 tb_dig box A mx-good.dane.example 127.0.0.1 ||
	fail "unbound does not answer: $(tail -n 3 "$D/unbound.out" "$D/unbound.log" 2>/dev/null)"
# the box asks unbound (ip netns exec mounts this at the daemon's start)
echo "nameserver 127.0.0.1" >"/etc/netns/$(tb_ns box)/resolv.conf"

# the fake MX: STARTTLS with the certificate of the TLSA records
: >"$S/mx.log"
ip netns exec "$(tb_ns out)" python3 "$TB_REPO/test/fakesmtp.py" "$S/mx.log" tls \
	"$D/cert.pem" "$D/key.pem" "$MX_IP" 25 </dev/null >>"$S/fake.err" 2>&1 &
FAKE_SMTP=$!
wait_for grep -q LISTENING "$S/mx.log" || fail "fake MX did not start: $(tail -n 3 "$S/fake.err")"
: >"$S/mx2.log"
ip netns exec "$(tb_ns out)" python3 "$TB_REPO/test/fakesmtp.py" "$S/mx2.log" tls \
	"$D/ta-chain.pem" "$D/ta.key" "$MX2_IP" 25 </dev/null >>"$S/fake.err" 2>&1 &
FAKE2=$!
wait_for grep -q LISTENING "$S/mx2.log" || fail "second fake MX did not start: $(tail -n 3 "$S/fake.err")"

reload() { local o; o=$(ctl reload 2>&1) || fail "reload refused: $o"; }
sent() { grep -q "tls=1 MSG $1\$" "${2:-$S/mx.log}"; }
line() { grep "to=<$1>" "$TB_MXB_LOG" | tail -n 1; }
msg() {	# msg TO SUBJECT
	send c1 "$TB_EXT_IP4" sender@example.org "$1" "$2" ||
		fail "$2: message not accepted: $(cat "$S/send.out")"
}

mta_conf "tls-policy default dane
tls-policy domain none.dane.example dane-only"
mta_up

# A. a matching DANE-EE record: authenticated by DANE
msg rcpt@good.dane.example dane-a
wait_for -t 30 sent dane-a || fail "A: not delivered: $(line rcpt@good.dane.example)"
wait_for -t 10 log_has "to=<rcpt@good.dane.example> .*disposition=delivered tls=dane " ||
	fail "A: no tls=dane on the delivered line: $(line rcpt@good.dane.example)"
log_has "mta: conn=[0-9]+ relay=mx-good.dane.example\\[$MX_IP\\] tls=dane level=dane tlsa=3.1.1 depth=0 protocol=TLS" ||
	fail "A: no DANE session logged: $(grep 'relay=mx-good' "$TB_MXB_LOG" | tail -n 2)"

# B. a record of another key: no message goes, the reason is logged
msg rcpt@bad.dane.example dane-b
wait_for -t 30 log_has "to=<rcpt@bad.dane.example> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "B: not deferred with 4.7.5: $(line rcpt@bad.dane.example)"
log_has "relay=mx-bad.dane.example\\[$MX_IP\\] failed error=\"TLS with mx-bad.dane.example\\[$MX_IP\\] \\(dane\\): .*certificate: .*DANE" ||
	fail "B: the mismatch is not the logged reason: $(grep 'relay=mx-bad' "$TB_MXB_LOG" | tail -n 2)"
grep -q "MSG dane-b" "$S/mx.log" && fail "B: message sent to a server its TLSA records do not match"

# C. an unsigned zone: "may" (its TLSA record, a mismatching one, unused)
msg rcpt@plain.example dane-c
wait_for -t 30 sent dane-c || fail "C: not delivered: $(line rcpt@plain.example)"
wait_for -t 10 log_has "to=<rcpt@plain.example> .*disposition=delivered tls=anonymous " ||
	fail "C: not delivered as tls=anonymous: $(line rcpt@plain.example)"
log_has "relay=mx.plain.example\\[$MX_IP\\] tls=anonymous level=dane protocol=TLS.* dane=\"the MX answer was not DNSSEC-validated\"" ||
	fail "C: why DANE did not apply is not logged: $(grep 'relay=mx.plain' "$TB_MXB_LOG" | tail -n 2)"

# D. bogus TLSA (SERVFAIL from the validator): deferred, nothing sent
msg rcpt@bogus.dane.example dane-d
wait_for -t 30 log_has "to=<rcpt@bogus.dane.example> .*disposition=deferred" ||
	fail "D: not deferred: $(line rcpt@bogus.dane.example)"
log_has "relay=mx-bogus.dane.example\\[$MX_IP\\] failed error=\"DANE \\(dane\\) for mx-bogus.dane.example\\[$MX_IP\\]: TLSA lookup of _25._tcp.mx-bogus.dane.example failed" ||
	fail "D: the failed lookup is not the logged reason: $(grep 'relay=mx-bogus' "$TB_MXB_LOG" | tail -n 2)"
grep -q "MSG dane-d" "$S/mx.log" && fail "D: message sent despite bogus TLSA records"

# E. dane-only, a signed name without TLSA records: deferred
msg rcpt@none.dane.example dane-e
wait_for -t 30 log_has "to=<rcpt@none.dane.example> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "E: not deferred with 4.7.5: $(line rcpt@none.dane.example)"
log_has "failed error=\"DANE \\(dane-only\\) for mx-none.dane.example\\[$MX_IP\\]: no TLSA records at _25._tcp.mx-none.dane.example" ||
	fail "E: the reason is not logged: $(grep 'relay=mx-none' "$TB_MXB_LOG" | tail -n 2)"
grep -q "MSG dane-e" "$S/mx.log" && fail "E: message sent under dane-only without TLSA records"

# F. DANE-TA: the CA's record, the chain's name checked
msg rcpt@ta.dane.example dane-f
wait_for -t 30 sent dane-f "$S/mx2.log" || fail "F: not delivered: $(line rcpt@ta.dane.example)"
wait_for -t 10 log_has "relay=mx-ta.dane.example\\[$MX2_IP\\] tls=dane level=dane tlsa=2.0.1 depth=1 " ||
	fail "F: no DANE-TA session logged: $(grep 'relay=mx-ta' "$TB_MXB_LOG" | tail -n 2)"
msg rcpt@taname.dane.example dane-f2
wait_for -t 30 log_has "to=<rcpt@taname.dane.example> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "F: another name: not deferred: $(line rcpt@taname.dane.example)"
log_has "relay=mx-taname.dane.example\\[$MX2_IP\\] failed error=\"TLS with .*\\(dane\\): .*certificate: hostname mismatch" ||
	fail "F: another name: the reason is not the name: $(grep 'relay=mx-taname' "$TB_MXB_LOG" | tail -n 1)"
grep -q "MSG dane-f2" "$S/mx2.log" && fail "F: sent to a DANE-TA chain that does not name the host"

# G. only unusable (PKIX) records: TLS, unauthenticated
msg rcpt@pkix.dane.example dane-g
wait_for -t 30 sent dane-g || fail "G: not delivered: $(line rcpt@pkix.dane.example)"
wait_for -t 10 log_has "relay=mx-pkix.dane.example\\[$MX_IP\\] tls=anonymous level=dane .*dane=\"1 TLSA records at _25._tcp.mx-pkix.dane.example, none usable\"" ||
	fail "G: not logged as TLS without DANE: $(grep 'relay=mx-pkix' "$TB_MXB_LOG" | tail -n 2)"

# H. 500 records (unbound refuses to validate RRsets of 64 kB in
# canonical form): 64 used, none matches, the rest said unused
msg rcpt@huge.dane.example dane-h
wait_for -t 30 log_has "to=<rcpt@huge.dane.example> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "H: not deferred: $(line rcpt@huge.dane.example)"
log_has "relay=mx-huge.dane.example.*no matching DANE TLSA records; DANE: 436 TLSA records over the limit of 64 not used" ||
	fail "H: the limit is not in the reason: $(grep 'relay=mx-huge' "$TB_MXB_LOG" | tail -n 2)"
grep -q "MSG dane-h" "$S/mx.log" && fail "H: message sent though no record matched"

# I. no MX, a validated absence: the domain is its own TLSA base
msg rcpt@direct.dane.example dane-i
wait_for -t 30 sent dane-i || fail "I: not delivered: $(line rcpt@direct.dane.example)"
wait_for -t 10 log_has "to=<rcpt@direct.dane.example> .*relay=direct.dane.example\\[$MX_IP\\] .*disposition=delivered tls=dane " ||
	fail "I: not delivered with tls=dane: $(line rcpt@direct.dane.example)"

# J. the resolver's AD bit not believed: no DANE, so dane-only defers
mta_conf "tls-policy default dane-only
tls-policy trust-ad no"
reload
msg rcpt@good.dane.example dane-j
wait_for -t 30 log_has "to=<rcpt@good.dane.example> .*dsn=4.7.5 .*disposition=deferred" ||
	fail "J: not deferred: $(line rcpt@good.dane.example)"
log_has "the resolver is not trusted for DNSSEC \\(tls-policy trust-ad\\)" ||
	fail "J: the reason is not logged"
grep -q "MSG dane-j" "$S/mx.log" && fail "J: message sent without DANE under dane-only"

mta_down
pass "dane: DANE-EE match (tls=dane), mismatch deferred, unsigned zone as may, bogus TLSA deferred, dane-only without TLSA deferred, DANE-TA (depth 1, name checked), PKIX-only as encrypt, 500 records bounded, no MX, trust-ad no"
