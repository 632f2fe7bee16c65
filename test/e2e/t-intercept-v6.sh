#!/bin/bash
# t-intercept-v6: the interception path over IPv6 from c1
# (2001:db8:2::101): SMTP to the protected server's IPv6 address reaches
# the incoming listener and to another server the outgoing one; pass
# reaches the real Postfix, which sees the real client; drop is refused
# and reaches nothing; ICMPv6 and TCP to another port cross untouched; a
# SYN the queue cannot read (long extension headers) is reset.
# The protected server is named (mx.example.com: A and AAAA), so both of
# its addresses make a flow incoming.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# classified through the queue (its copy range and malformed count are
# what this reads); t-classify-kernel runs IPv6 through the kernel's
MXB_CLASSIFIER=queue
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup
# the protected server by name: both of srv's addresses are incoming
conf() { mxb_conf_write "$MXB_DIR/run.conf" "$1" "$2" mx.example.com; }

conf proxy proxy
mxb_nf_up open
mxb_start_queue "$MXB_DIR/run.conf"

# 1. proxy, both directions
expect_glob "c1 to [$TB_SRV_IP6]:25" "$(tb_banner c1 "$TB_SRV_IP6")" "BANNER 220 gw.example.com *"
grep -Eq "session=[0-9]+ client=\[$TB_C1_IP6\]:[0-9]+ orig_dst=\[$TB_SRV_IP6\]:25 dir=incoming port=p0" \
	"$TB_MXB_LOG" || fail "no incoming IPv6 session logged: $(grep session= "$TB_MXB_LOG")"
# (the outgoing proxy may relay live: the banner can be the sink's own,
# so the daemon's log tells)
expect_glob "c1 to [$TB_EXT_IP6]:25" "$(tb_banner c1 "$TB_EXT_IP6")" "BANNER 220 *"
grep -Eq "session=[0-9]+ client=\[$TB_C1_IP6\]:[0-9]+ orig_dst=\[$TB_EXT_IP6\]:25 dir=outgoing port=p0" \
	"$TB_MXB_LOG" || fail "no outgoing IPv6 session logged: $(grep session= "$TB_MXB_LOG")"
# a SYN whose extension headers run past the queue's copy range (264
# octets of destination options: 8 skippable options, as many as a Linux
# receiver takes) cannot be read: it meets the drop class's reset instead
# of slipping past the policy unclassified
DSTOPTS_PY='
import socket, sys
opts = b"".join(bytes([0x1e, 30]) + bytes(30) for _ in range(8)) + bytes([1, 4, 0, 0, 0, 0])
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, (2 + len(opts)) // 8 - 1]) + opts)
s.settimeout(5)
try:
    s.connect((sys.argv[1], 25))
    print("BANNER " + s.recv(512).decode(errors="replace").splitlines()[0])
except ConnectionRefusedError:
    print("REFUSED")
except OSError as e:
    print("ERROR %s" % e)
'
expect_glob "c1 to [$TB_SRV_IP6]:25, long destination options" \
	"$(tb_exec c1 python3 -c "$DSTOPTS_PY" "$TB_SRV_IP6")" REFUSED
[ "$(maillog_connects "$TB_C1_IP6")" = 0 ] || fail "a proxied connection reached Postfix"

# 2. non-SMTP: ICMPv6 and TCP to port 8025 cross untouched
tbd_pingall c1 "$TB_SRV_IP6" "$TB_EXT_IP6" >/dev/null || fail "ping6 across the bridge"
before=$(mxb_decisions)
tb_hello_start srv 8025 6 || fail "test server on 8025 did not start"
r=$(tb_banner c1 "$TB_SRV_IP6" 8025)
tb_hello_stop
expect_glob "c1 to [$TB_SRV_IP6]:8025" "$r" "BANNER hello $TB_C1_IP6"
[ "$(mxb_decisions)" = "$before" ] || fail "non-SMTP IPv6 traffic was classified"

# 3. drop: refused, nothing reaches Postfix
conf drop proxy
mxb_reload
expect_glob "dropped c1 to [$TB_SRV_IP6]:25" "$(tb_banner c1 "$TB_SRV_IP6")" REFUSED
sleep 0.5
[ "$(maillog_connects "$TB_C1_IP6")" = 0 ] || fail "a dropped connection reached Postfix"

# 4. pass: Postfix takes the mail and sees the real client
conf pass proxy
mxb_reload
expect_glob "passed c1 to [$TB_SRV_IP6]:25" "$(tb_banner c1 "$TB_SRV_IP6")" \
	"BANNER 220 mx.example.com ESMTP*"
expect_postfix_direct c1 "$TB_C1_IP6" "$TB_SRV_IP6" alice@example.com "t-intercept v6 pass"

mxb_stats_expect nfq_incoming_proxy -ge 1 nfq_outgoing_proxy -ge 1 \
	nfq_incoming_pass -ge 1 nfq_incoming_drop -ge 1 nfq_malformed -eq 1
mxb_down
pass "IPv6: incoming/outgoing proxy, drop, pass with the real client, non-SMTP untouched"
