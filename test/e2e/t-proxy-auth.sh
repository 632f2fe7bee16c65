#!/bin/bash
# t-proxy-auth: AUTH through the live relay to an outside server that
# requires it (a fake upstream on 192.0.2.22 in the out node).
#   - the AUTH exchange is relayed verbatim: 334 challenges, a wrong
#     password (535), a cancelled AUTH LOGIN (501), then 235, and the
#     message goes through; swaks --auth PLAIN works too;
#   - an upstream that offers AUTH only inside TLS: a plaintext client
#     is not offered AUTH and gets 538 if it tries; with STARTTLS on the
#     client leg it authenticates.
. "$(dirname "$0")/t-proxy-common.inc"

tb_make_cert "$S"
proxy_conf "tls certificate \"$S/cert.pem\" key \"$S/key.pem\"
starttls outgoing offer"
proxy_up

# 1. AUTH offered in the clear by the upstream
fake_up --auth
hostile "$FAKE_IP" auth
wait_for sink_count "$S/fake" -ge 1 || fail "authenticated message not stored"
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net \
	--auth PLAIN --auth-user user --auth-password pass ||
	fail "swaks --auth: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
wait_for sink_count "$S/fake" -ge 2 || fail "swaks message not stored"
log_has "client=$TB_C1_IP4:[0-9]+ auth=ok" || fail "AUTH not logged"
grep -q "dXNlcgBwYXNz\|AHVzZXIAcGFzcw" "$TB_MXB_LOG" && fail "credentials in the log"

# 2. AUTH only inside TLS upstream
fake_up --auth --mode authtls --tls "$S/cert.pem" "$S/key.pem"
tb_exec c1 swaks --server "$FAKE_IP" --quit-after EHLO >"$S/ehlo.out" 2>&1
grep -q "^<-  250[- ]AUTH" "$S/ehlo.out" &&
	fail "AUTH offered to a plaintext client: the upstream offers it only in TLS"
hostile "$FAKE_IP" authclear
hostile "$FAKE_IP" tlsauth
n=$(sink_count "$S/fake")
[ "$n" -ge 3 ] || fail "TLS+AUTH message not stored"

mxb_down
pass "AUTH relayed verbatim (334, 535, 501, 235), not offered in the clear when the upstream hides it"
