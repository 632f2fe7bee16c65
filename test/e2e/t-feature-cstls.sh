#!/bin/bash
# t-feature-cstls: "client-server tls" on the live relay's upstream leg,
# with no certificate of the box's own (STARTTLS stripped toward clients):
#   - none: plain text to an upstream that offers STARTTLS;
#   - opportunistic: STARTTLS to it;
#   - require: STARTTLS to it, and an upstream without STARTTLS (the
#     smtp-sink) is refused: the client gets 421, nothing arrives.
. "$(dirname "$0")/t-proxy-common.inc"

make_cert
reload() {
	tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" reload >/dev/null || fail "reload"
}
# relay_to SERVER SUBJECT: one message from c1 through the live relay
relay_to() {
	tb_swaks c1 --server "$1" -f sender@example.org -t rcpt@example.net \
		--header "Subject: $2"
}
# upstream_tls SUBJECT: the fake upstream's "TLS:" line for that message
upstream_tls() {
	local f
	wait_for eval "grep -rqs '$1' '$S/fake'" || { echo missing; return; }
	f=$(grep -rl "$1" "$S/fake" | head -n 1)
	sed -n 's/^TLS: //p' "$f"
}

proxy_conf "client-server tls none"
proxy_up
fake_up --tls "$S/cert.pem" "$S/key.pem"

# 1. none
relay_to "$FAKE_IP" "cstls none" || fail "tls none: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
[ "$(upstream_tls "cstls none")" = False ] || fail "tls none: the upstream leg was encrypted"
log_has "upstream=$FAKE_IP:25 tls=" && fail "tls none: upstream TLS logged"
log_has "upstream tls=none hide-box=no" || fail "tls none: mode not logged"

# 2. opportunistic
proxy_conf "client-server tls opportunistic"
reload
relay_to "$FAKE_IP" "cstls opportunistic" ||
	fail "tls opportunistic: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
[ "$(upstream_tls "cstls opportunistic")" = True ] || fail "tls opportunistic: not encrypted"
log_has "upstream=$FAKE_IP:25 tls=TLSv1\.[23]/" || fail "tls opportunistic: upstream TLS not logged"

# 3. require: to a STARTTLS upstream, and to one without
proxy_conf "client-server tls require"
reload
relay_to "$FAKE_IP" "cstls require" ||
	fail "tls require: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
[ "$(upstream_tls "cstls require")" = True ] || fail "tls require: not encrypted"
n0=$(sink_count "$TB_EXT_DIR")
relay_to "$TB_EXT_IP4" "cstls require plain" && fail "tls require: a plain upstream was used"
grep -q '^<\*\* *421 ' "$TB_STATE/swaks.out" ||
	fail "tls require: no 421: $(grep -m2 '^<' "$TB_STATE/swaks.out" | tail -n 1)"
log_has "upstream does not offer STARTTLS" || fail "tls require: refusal not logged"
sleep 1
[ "$(sink_count "$TB_EXT_DIR")" = "$n0" ] || fail "tls require: something reached the plain upstream"

fake_down
proxy_down
pass "client-server tls: none, opportunistic and require on the live relay's upstream leg"
