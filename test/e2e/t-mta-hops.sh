#!/bin/bash
# t-mta-hops: loop detection on the MTA path (limits { hops }, default 100,
# RFC 5321 6.3).
#   - a message that arrives with 100 Received: fields is refused at the
#     dot with 554 5.4.6 and leaves nothing in the spool;
#   - one with 99 is queued and delivered, with the box's own Received:
#     on top (100 in Alice's copy);
#   - "limits { hops 3 }" after a reload refuses 3 and takes 2.
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}"
mta_up
# Postfix itself refuses 50 hops (hopcount_limit): let it take ours
tb_exec srv postconf -c "$TB_POSTFIX_CONF" -e hopcount_limit=200 &&
	tb_postfix reload >/dev/null 2>&1 || fail "postconf hopcount_limit"

spool_files() { find "$S/spool/queue" -type f 2>/dev/null | wc -l; }

SEND_RECEIVED=100 send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hops 100" &&
	fail "100 Received: fields were accepted: $(cat "$S/send.out")"
grep -q "^ERR 554 5.4.6 " "$S/send.out" || fail "100 hops: not a 554 5.4.6: $(cat "$S/send.out")"
[ "$(spool_files)" = 0 ] || fail "100 hops: the spool holds $(spool_files) files"
log_has "from=<sender@example.org> to=<alice@example.com> .*disposition=rejected .*reason=too-many-hops" ||
	fail "the refusal is not logged with its reason"

SEND_RECEIVED=99 send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hops 99" ||
	fail "99 Received: fields were refused: $(cat "$S/send.out")"
wait_for maildir_grep alice "^Subject: t-mta-hops 99" || fail "the 99-hop message was not delivered"
f=$(grep -rlE "^Subject: t-mta-hops 99" "$TB_MAILDIR/alice/new" "$TB_MAILDIR/alice/cur" | head -n 1)
n=$(sed '/^\r\?$/q' "$f" | grep -c '^Received:')
# Alice's copy also has Postfix's own Received: on top of the box's
[ "$n" = 101 ] || fail "delivered copy has $n Received: fields, want 99 + box + Postfix = 101"
box=$(grep -n "by gw.example.com (mxbridge)" "$f" | head -n 1 | cut -d: -f1)
hop=$(grep -n "^Received: from hop0.example.org" "$f" | head -n 1 | cut -d: -f1)
[ -n "$box" ] && [ -n "$hop" ] && [ "$box" -lt "$hop" ] ||
	fail "the box's Received: (line ${box:-none}) is not above the client's (line ${hop:-none})"
maildir_grep alice "^Subject: t-mta-hops 100" && fail "the 100-hop message reached Alice"

mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
limits { hops 3; }"
ctl reload >/dev/null || fail "reload refused"
SEND_RECEIVED=3 send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hops 3" &&
	fail "hops 3: 3 Received: fields were accepted"
SEND_RECEIVED=2 send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-mta-hops 2" ||
	fail "hops 3: 2 Received: fields were refused: $(cat "$S/send.out")"
wait_for maildir_grep alice "^Subject: t-mta-hops 2" || fail "the 2-hop message was not delivered"

mta_down
pass "loop detection: 100 refused (554 5.4.6, nothing queued), 99 delivered, hops 3 after reload"
