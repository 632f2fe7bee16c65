#!/bin/bash
# t-feature-cstls: "client-server tls" on the live relay's upstream leg,
# with no certificate of the box's own (STARTTLS stripped toward clients):
#   - none: plain text to an upstream that offers STARTTLS;
#   - opportunistic: STARTTLS to it;
#   - require: STARTTLS to it, and an upstream without STARTTLS (the
#     smtp-sink) is refused: the client gets 421, nothing arrives.
. "$(dirname "$0")/t-proxy-common.inc"

tb_make_cert "$S"
# relay_to SERVER SUBJECT: one message from c1 through the live relay
relay_to() {
	tb_swaks c1 --server "$1" -f sender@example.org -t rcpt@example.net \
		--header "Subject: $2"
}
# relay_tls MODE WANT: the message "cstls MODE" through the live relay to
# the fake upstream, whose "TLS:" line for it must be WANT (True, False)
relay_tls() {
	local f got=missing
	relay_to "$FAKE_IP" "cstls $1" ||
		fail "tls $1: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
	if wait_for eval "grep -rqs 'cstls $1' '$S/fake'"; then
		f=$(grep -rl "cstls $1" "$S/fake" | head -n 1)
		got=$(sed -n 's/^TLS: //p' "$f")
	fi
	[ "$got" = "$2" ] || fail "tls $1: the upstream leg's TLS: '$got', want $2"
}

proxy_conf "client-server tls none"
proxy_up
fake_up --tls "$S/cert.pem" "$S/key.pem"

# 1. none
relay_tls none False
log_has "upstream=$FAKE_IP:25 tls=" && fail "tls none: upstream TLS logged"
log_has "upstream tls=none hide-box=no" || fail "tls none: mode not logged"

# 2. opportunistic
proxy_conf "client-server tls opportunistic"
mxb_reload
relay_tls opportunistic True
log_has "upstream=$FAKE_IP:25 tls=TLSv1\.[23]/" || fail "tls opportunistic: upstream TLS not logged"

# 3. require: to a STARTTLS upstream, and to one without
proxy_conf "client-server tls require"
mxb_reload
relay_tls require True
n0=$(sink_count "$TB_EXT_DIR")
relay_to "$TB_EXT_IP4" "cstls require plain" && fail "tls require: a plain upstream was used"
grep -q '^<\*\* *421 ' "$TB_STATE/swaks.out" ||
	fail "tls require: no 421: $(grep -m2 '^<' "$TB_STATE/swaks.out" | tail -n 1)"
log_has "upstream does not offer STARTTLS" || fail "tls require: refusal not logged"
sleep 1
[ "$(sink_count "$TB_EXT_DIR")" = "$n0" ] || fail "tls require: something reached the plain upstream"

fake_down
mxb_down
pass "client-server tls: none, opportunistic and require on the live relay's upstream leg"
