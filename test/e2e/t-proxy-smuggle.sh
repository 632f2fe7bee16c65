#!/bin/bash
# t-proxy-smuggle: SMTP smuggling through both paths.  A DATA body that
# holds each of \n.\n \r.\r \r.\n \n.\r \n.\r\n \r\n.\n \r.\r\n \r\n.\r
# \r\n\0.\r\n followed by a smuggled MAIL/RCPT/DATA is refused as a whole
# (only \r\n.\r\n ends DATA; bare CR, bare LF and NUL are refused), so no
# second message ever reaches the sink (live relay) or the Maildir (MTA
# path).  Dot-stuffing arrives right on both.
. "$(dirname "$0")/t-proxy-common.inc"

proxy_conf
proxy_up

# 1. live relay to the sink
n0=$(sink_count "$TB_EXT_DIR")
hostile "$TB_EXT_IP4" smuggle --rcpt rcpt@example.net
[ "$(grep -c '^ok' "$S/hostile.out")" = 9 ] || fail "battery incomplete: $(cat "$S/hostile.out")"
sleep 1
[ "$(sink_count "$TB_EXT_DIR")" = "$n0" ] ||
	fail "a refused message reached the sink: $(grep -rl smuggle "$TB_EXT_DIR")"
grep -rqs SMUGGLED "$TB_EXT_DIR" && fail "a smuggled message reached the sink"
hostile "$TB_EXT_IP4" dotstuff --rcpt rcpt@example.net
wait_for sink_count "$TB_EXT_DIR" -gt "$n0" || fail "dot-stuffing message not at the sink"
f=$(grep -rl "dotstuff test" "$TB_EXT_DIR")
want=$(printf '.\n..\n.leading\ntrailing.\n .space\nend')
got=$(sed -n '/^Subject: dotstuff test/,$p' "$f" | tr -d '\r' | sed -n '3,8p')
[ "$got" = "$want" ] || fail "dot-stuffing at the sink: got '$got'"

# 2. MTA path: incoming, to the protected Postfix
hostile "$TB_SRV_IP4" smuggle --rcpt alice@example.com
[ "$(grep -c '^ok' "$S/hostile.out")" = 9 ] || fail "battery incomplete (MTA path)"
hostile "$TB_SRV_IP4" dotstuff --rcpt alice@example.com
wait_for maildir_count alice -ge 1 || fail "dot-stuffing message not delivered"
sleep 2
[ "$(maildir_count alice)" = 1 ] || fail "more than one message in the Maildir"
grep -rqs -e SMUGGLED -e "smuggle test" "$TB_MAILDIR" && fail "a smuggled message was delivered"
f=$(grep -rl "dotstuff test" "$TB_MAILDIR/alice/new")
got=$(sed -n '/^Subject: dotstuff test/,$p' "$f" | tr -d '\r' | sed -n '3,8p')
[ "$got" = "$want" ] || fail "dot-stuffing in the Maildir: got '$got'"
log_has "disposition=rejected delay=[0-9.]+s reason=bare LF" || fail "refusal reason not logged"
log_has "disposition=rejected delay=[0-9.]+s reason=NUL" || fail "NUL refusal not logged"

mxb_down
pass "smuggling battery refused on both paths, dot-stuffing intact"
