#!/bin/bash
# t-proxy-tls: STARTTLS on both legs.
#   - swaks --tls through the live relay to a STARTTLS upstream: TLS on
#     the client leg (the proxy's certificate) and on the upstream leg,
#     protocol/cipher logged per leg and counted (stats tls_sessions),
#     the message delivered;
#   - a client that pipelines MAIL behind STARTTLS: the MAIL is dropped;
#   - swaks --tls on the MTA path (incoming): delivered;
#   - an upstream that sends bytes right after its 220 to STARTTLS: the
#     session ends, nothing is injected;
#   - "starttls outgoing require": MAIL before STARTTLS gets 530, and an
#     upstream without STARTTLS is refused (421);
#   - "strip": STARTTLS is not offered;
#   - an upstream whose TLS handshake fails: opportunistic TLS starts over
#     in plain text on a second connection (the client sees one session,
#     the message arrives in plain text); "client-server tls require"
#     gives the client 421 and stores nothing.
. "$(dirname "$0")/t-proxy-common.inc"

tb_make_cert "$S"
proxy_conf "tls certificate \"$S/cert.pem\" key \"$S/key.pem\"
starttls incoming offer
starttls outgoing offer"
proxy_up
fake_up --tls "$S/cert.pem" "$S/key.pem"

# tls_send SERVER RCPT SUBJECT: one message over STARTTLS: swaks --tls, or
# smuggle.py where swaks has no Net::SSLeay (libnet-ssleay-perl)
tls_send() {
	if perl -MNet::SSLeay -e 1 >/dev/null 2>&1; then
		tb_swaks c1 --server "$1" --tls -f sender@example.org -t "$2" \
			--header "Subject: $3" || return 1
		grep -q "TLS started" "$TB_STATE/swaks.out"
	else
		note "swaks lacks Net::SSLeay: STARTTLS with smuggle.py"
		ip netns exec "$(tb_ns c1)" python3 "$SMUGGLE" client "$1" 25 tlssend \
			--rcpt "$2" --mode "$3" >"$TB_STATE/swaks.out" 2>&1
	fi
}

# 1. both legs
tls_send "$FAKE_IP" rcpt@example.net "t-proxy-tls both" ||
	fail "STARTTLS to the upstream: $(grep -m1 -E '^(<\*\*|\*\*\*|FAIL)' "$TB_STATE/swaks.out")"
wait_for sink_count "$S/fake" -ge 1 || fail "message not at the upstream"
grep -rqs "^TLS: True" "$S/fake" || fail "the upstream leg was not encrypted"
log_has "client=$TB_C1_IP4:[0-9]+ dir=outgoing tls=TLSv1\.[23]/" || fail "client leg TLS not logged"
log_has "upstream=$FAKE_IP:25 tls=TLSv1\.[23]/" || fail "upstream leg TLS not logged"
# counted on both legs, by the protocol logged (stats tls_sessions.LEG.P)
for leg in client server; do
	p=$(grep -Eo "$([ $leg = client ] && echo "dir=outgoing" || echo "upstream=$FAKE_IP:25") tls=TLSv1\.[23]/" "$TB_MXB_LOG" |
		head -n 1 | sed 's/.*tls=\(TLSv1\.[23]\)\//\1/')
	wait_for eval "mxb_ctl stats | grep -qx 'tls_sessions.$leg.$p=1'" ||
		fail "the $leg leg's $p session not counted: $(mxb_ctl stats | grep '^tls_sessions')"
done

# 2. pipelined behind STARTTLS
hostile "$FAKE_IP" starttls
log_has "starttls: discarded [0-9]+ pipelined bytes" || fail "discarded bytes not logged"

# 3. MTA path with TLS
tls_send "$TB_SRV_IP4" alice@example.com "t-proxy-tls incoming" ||
	fail "STARTTLS incoming: $(grep -m1 -E '^(<\*\*|\*\*\*|FAIL)' "$TB_STATE/swaks.out")"
wait_for maildir_count alice -ge 1 || fail "incoming TLS message not delivered"
grep -rqs "with ESMTPS" "$TB_MAILDIR/alice/new" || fail "Received: does not say ESMTPS"

# 4. bytes before the upstream handshake
fake_up --tls "$S/cert.pem" "$S/key.pem" --mode pretls
n0=$(sink_count "$S/fake")
hostile "$FAKE_IP" expect-fail
log_has "error=\"upstream sent data before the TLS handshake\"" ||
	fail "pre-TLS bytes not detected: $(grep upstream= "$TB_MXB_LOG" | tail -n 2)"
[ "$(sink_count "$S/fake")" = "$n0" ] || fail "a message went through"

# 5. require
proxy_conf "tls certificate \"$S/cert.pem\" key \"$S/key.pem\"
starttls outgoing require"
mxb_reload
fake_up --tls "$S/cert.pem" "$S/key.pem"
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net &&
	fail "plain MAIL accepted although TLS is required"
grep -q '^<\*\* *530 5.7.0' "$TB_STATE/swaks.out" || fail "no 530 before STARTTLS"
tls_send "$FAKE_IP" rcpt@example.net "t-proxy-tls require" ||
	fail "required TLS: $(grep -m1 -E '^(<\*\*|\*\*\*|FAIL)' "$TB_STATE/swaks.out")"
hostile "$TB_EXT_IP4" expect-fail
log_has "upstream does not offer STARTTLS" || fail "refused upstream not logged"

# 6. strip
proxy_conf "tls certificate \"$S/cert.pem\" key \"$S/key.pem\"
starttls outgoing strip"
mxb_reload
tb_exec c1 swaks --server "$FAKE_IP" --quit-after EHLO >"$S/ehlo.out" 2>&1
grep -q "STARTTLS" "$S/ehlo.out" && fail "STARTTLS offered with strip"
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net ||
	fail "strip: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"

# 7. broken upstream TLS: plain text again, or 421 when required
fake_up --tls "$S/cert.pem" "$S/key.pem" --mode badtls
n0=$(sink_count "$S/fake")
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net \
	--header "Subject: t-proxy-tls fallback" ||
	fail "fallback: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
wait_for sink_count "$S/fake" -gt "$n0" || fail "fallback: message not at the upstream"
f=$(grep -rls "t-proxy-tls fallback" "$S/fake")
[ -n "$f" ] && grep -q "^TLS: False" $f || fail "fallback: not stored as a plain-text message"
[ "$(grep -c '^accept ' "$S/fake.log")" = 2 ] ||
	fail "fallback: $(grep -c '^accept ' "$S/fake.log") connections upstream, want 2"
grep -Eq "^<- +220 fake.upstream ESMTP ready" "$TB_STATE/swaks.out" ||
	fail "fallback: the client did not see the upstream's greeting"
[ "$(grep -c '^<- *220 ' "$TB_STATE/swaks.out")" = 1 ] || fail "fallback: the client saw a second greeting"
log_has "upstream=$FAKE_IP:25 tls=failed error=.* fallback=plaintext" || fail "fallback not logged"
log_has "to=<rcpt@example.net> nrcpt=1 .*disposition=relayed" || fail "fallback: not relayed"

proxy_conf "tls certificate \"$S/cert.pem\" key \"$S/key.pem\"
client-server tls require"
mxb_reload
n0=$(sink_count "$S/fake")
tb_swaks c1 --server "$FAKE_IP" -f sender@example.org -t rcpt@example.net &&
	fail "require: a server with broken TLS got the message"
grep -q '^<\*\* *421 ' "$TB_STATE/swaks.out" ||
	fail "require: no 421: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
[ "$(grep -c 'fallback=plaintext' "$TB_MXB_LOG")" = 1 ] || fail "require: fell back to plain text"
[ "$(sink_count "$S/fake")" = "$n0" ] || fail "require: a message was stored"

fake_down
mxb_down
pass "STARTTLS on both legs, pipelined bytes dropped, pre-TLS injection refused, require, strip, fallback from broken TLS"
