#!/bin/bash
# t-feature-cstls-verify: "client-server tls verify" on the live relay's
# upstream leg, against the fake upstream (test/smuggle.py serve) with
# certificates of a test CA made here:
#   A. the CA's certificate naming the "match" name: relayed, logged
#      verified=yes;
#   B. an unknown CA (self-signed, the right name): the client gets
#      421 4.7.5, nothing reaches the upstream, the reason is logged;
#   C. the CA's certificate for another name: 421, "hostname mismatch";
#   D. "client-server match" of the upstream's network names it: relayed;
#   E. no names at all: the certificate must name the address dialled
#      (an IP subjectAltName): relayed; a DNS name only: 421;
#   F. encrypt (require): the unknown CA's certificate is taken,
#      verified=no;
#   G. 100 RSA certificates sent (over the 64 KiB cap): verify 421s with
#      "certificate chain too big", opportunistic relays in plain text.
. "$(dirname "$0")/t-proxy-common.inc"

tb_cert "$S/ca" "mxbridge test CA"
tb_cert "$S/good" mx.upstream.example "$S/ca"
tb_cert "$S/other" other.example "$S/ca"
tb_cert "$S/self" mx.upstream.example
tb_cert "$S/ip" upstream-by-address "$S/ca" "IP:$FAKE_IP"
tb_cert_chain "$S/big" 100 mx.upstream.example -algorithm RSA -pkeyopt rsa_keygen_bits:2048

# relay SUBJECT: one message from c1 through the live relay to the fake
relay() {
	tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net \
		--header "Subject: $1"
}
# relayed SUBJECT: the message went, and arrived over TLS
relayed() {
	local f
	relay "$1" || fail "$1: not relayed: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
	wait_for eval "grep -rqs 'Subject: $1' '$S/fake'" || fail "$1: not at the upstream"
	f=$(grep -rl "Subject: $1" "$S/fake" | head -n 1)
	[ "$(sed -n 's/^TLS: //p' "$f")" = True ] || fail "$1: not over TLS upstream"
}
# refused SUBJECT REASON: 421 4.7.5 to the client, nothing upstream, the
# reason (a regex) logged with disposition=upstream-tls
refused() {
	relay "$1" && fail "$1: relayed"
	grep -q '^<\*\* *421 4\.7\.5 ' "$TB_STATE/swaks.out" ||
		fail "$1: no 421 4.7.5: $(grep -m2 '^<' "$TB_STATE/swaks.out" | tail -n 1)"
	wait_for log_has "upstream=$FAKE_IP:25 disposition=upstream-tls level=verify error=\"[^\"]*$2" ||
		fail "$1: reason not logged: $(grep 'upstream-tls' "$TB_MXB_LOG" | tail -n 1)"
	sleep 1
	grep -rqs "Subject: $1" "$S/fake" && fail "$1: reached the upstream"
	return 0
}
verified_logged() { log_has "upstream=$FAKE_IP:25 tls=TLSv1\.[23]/[^ ]+ verified=$1"; }

CA="ca-file \"$S/ca/cert.pem\""
proxy_conf "client-server tls verify match \"mx.upstream.example\" $CA"
proxy_up
fake_up --tls "$S/good/cert.pem" "$S/good/key.pem"

# A. the CA's certificate, the right name
relayed "verify-a"
verified_logged yes || fail "A: verified=yes not logged"
verified_logged no && fail "A: an unverified upstream session logged"

# B. an unknown CA
fake_up --tls "$S/self/cert.pem" "$S/self/key.pem"
refused "verify-b" "certificate: (self-signed|unable to get local issuer)"

# C. the CA's certificate for another name
fake_up --tls "$S/other/cert.pem" "$S/other/key.pem"
refused "verify-c" "certificate: hostname mismatch"

# D. the upstream's network names it (reload); another network's entry
# and the global match do not
proxy_conf "client-server tls verify match \"mx.upstream.example\" $CA
client-server match 198.51.100.0/24 \"nothing.example\"
client-server match 192.0.2.0/24 \"mx.upstream.example other.example\""
mxb_reload
relayed "verify-d"

# E. no names: the address; a certificate naming only a host name fails
proxy_conf "client-server tls verify $CA"
mxb_reload
fake_up --tls "$S/ip/cert.pem" "$S/ip/key.pem"
relayed "verify-e"
fake_up --tls "$S/good/cert.pem" "$S/good/key.pem"
refused "verify-e2" "certificate: (IP address|hostname) mismatch"

# F. encrypt: any certificate
proxy_conf "client-server tls encrypt"
mxb_reload
fake_up --tls "$S/self/cert.pem" "$S/self/key.pem"
relayed "verify-f"
verified_logged no || fail "F: verified=no not logged"

# G. an oversized certificate list, trusted root or not
proxy_conf "client-server tls verify match \"mx.upstream.example\" ca-file \"$S/big/root.pem\""
mxb_reload
fake_up --tls "$S/big/cert.pem" "$S/big/key.pem"
refused "verify-g" "certificate chain too big"
proxy_conf "client-server tls opportunistic"
mxb_reload
relay "verify-g2" || fail "G: opportunistic: not relayed: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
wait_for eval "grep -rqs 'Subject: verify-g2' '$S/fake'" || fail "G: opportunistic: not at the upstream"
grep -rqs '^TLS: False' "$(grep -rl 'Subject: verify-g2' "$S/fake" | head -n 1)" ||
	fail "G: opportunistic: not in plain text after the refused chain"
log_has "upstream=$FAKE_IP:25 tls=failed error=\"[^\"]*certificate chain too big[^\"]*\" fallback=plaintext" ||
	fail "G: opportunistic: the fallback not logged with the reason"

# -n refuses names without verify, with a clear line
proxy_conf "client-server tls require match \"mx.upstream.example\""
out=$(mxb_ctl reload 2>&1) && fail "reload took match without verify"
grep -q "match needs the level verify" <<<"$out$(tail -n 5 "$TB_MXB_LOG")" ||
	fail "match without verify: no clear reason: $out"

fake_down
mxb_down
pass "client-server tls verify: a good certificate relayed and logged verified, an unknown CA and a wrong name 421 4.7.5 with nothing upstream, per-network names, the address, encrypt, an oversized chain"
