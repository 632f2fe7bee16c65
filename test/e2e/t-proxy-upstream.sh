#!/bin/bash
# t-proxy-upstream: a misbehaving upstream (the fake one of smuggle.py)
# behind the live relay.  A reply line over 512 octets, thousands of
# continuation lines, a NUL or a bare LF in a reply, an unsolicited reply
# after RCPT: the session ends with 421 (or a close), nothing of it is
# injected to the client, nothing is delivered, the daemon lives on.
. "$(dirname "$0")/t-proxy-common.inc"

proxy_conf
proxy_up

check() {	# MODE LOGGED-ERROR
	fake_up --mode "$1"
	n0=$(sink_count "$S/fake")
	hostile "$FAKE_IP" expect-fail --mode "$1"
	log_has "disposition=upstream-lost error=\"$2\"" ||
		fail "$1: not logged as '$2': $(grep error= "$TB_MXB_LOG" | tail -n 1)"
	[ "$(sink_count "$S/fake")" = "$n0" ] || fail "$1: a message was stored"
	mxb_running || fail "$1: the daemon died"
	note "$1: $(tail -n 1 "$S/hostile.out")"
}
check longreply "reply line too long"
check manylines "too many reply lines"
check nul "NUL in reply"
check barelf "bare LF in reply"
check inject "unsolicited reply"

# a sane upstream still works afterwards
fake_up
hostile "$FAKE_IP" dotstuff
mxb_down
pass "long, endless, NUL, bare LF and injected upstream replies end the session cleanly"
