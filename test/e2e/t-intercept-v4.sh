#!/bin/bash
# t-intercept-v4: the interception path over IPv4 with the real rules
# (scripts/mxbridge-netfilter) and the daemon's queue and listeners.
#   - SMTP from c1 to the protected server reaches the incoming listener,
#     to another server the outgoing one (orig_dst, dir, port logged);
#   - bypass client: c2 reaches the real Postfix;
#   - non-SMTP (ping, TCP to another port) crosses untouched;
#   - after a reload, port p0 set to drop for incoming: refused, nothing
#     reaches Postfix; to pass for outgoing: the sink's own banner;
#   - p0 set to pass for incoming: mail is delivered by Postfix, whose
#     log shows the real client;
#   - mxbridgectl stats shows the decision counters.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# classified through the queue (the queue's per-flow decision lines are read); t-classify-kernel
# runs the same decisions in the kernel
MXB_CLASSIFIER=queue
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup
sessions_to() { grep -c "session=[0-9]* client=.* orig_dst=$1 " "$TB_MXB_LOG"; }

mxb_conf_write "$MXB_DIR/run.conf" proxy proxy
mxb_nf_up open
mxb_start_queue "$MXB_DIR/run.conf"

# 1. proxy: incoming and outgoing listeners
expect_glob "c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_SRV_IP4:25 dir=incoming port=p0" \
	"$TB_MXB_LOG" || fail "no incoming session logged: $(grep session= "$TB_MXB_LOG")"
# (the outgoing proxy may relay live: the banner can be the sink's own,
# so the daemon's log tells)
expect_glob "c1 to $TB_EXT_IP4:25" "$(tb_banner c1 "$TB_EXT_IP4")" "BANNER 220 *"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_EXT_IP4:25 dir=outgoing port=p0" \
	"$TB_MXB_LOG" || fail "no outgoing session logged: $(grep session= "$TB_MXB_LOG")"
grep -Eq "nfq: src=$TB_C1_IP4:[0-9]+ dst=$TB_SRV_IP4:25 port=p0 dir=incoming action=proxy" \
	"$TB_MXB_LOG" || fail "no nfq decision logged"
[ "$(maillog_connects "$TB_C1_IP4")" = 0 ] || fail "a proxied connection reached Postfix"

# 2. bypass client: c2 reaches Postfix itself
expect_glob "bypassed c2 to $TB_SRV_IP4:25" "$(tb_banner c2 "$TB_SRV_IP4")" \
	"BANNER 220 mx.example.com ESMTP*"
wait_for maillog_has "connect from unknown\[$TB_C2_IP4\]" ||
	fail "Postfix did not see the bypassed client $TB_C2_IP4"
grep -Eq "nfq: src=$TB_C2_IP4:[0-9]+ .* action=pass reason=bypass" "$TB_MXB_LOG" ||
	fail "bypass decision not logged"

# 3. non-SMTP crosses untouched: ping, and TCP to port 8025
tbd_pingall c1 "$TB_SRV_IP4" "$TB_EXT_IP4" >/dev/null || fail "ping across the bridge"
before=$(mxb_decisions)
tb_hello_start srv 8025 4 || fail "test server on 8025 did not start"
r=$(tb_banner c1 "$TB_SRV_IP4" 8025)
tb_hello_stop
expect_glob "c1 to $TB_SRV_IP4:8025" "$r" "BANNER hello $TB_C1_IP4"
after=$(mxb_decisions)
[ "$before" = "$after" ] || fail "non-SMTP traffic was classified ($before -> $after)"
grep -q "orig_dst=$TB_SRV_IP4:8025" "$TB_MXB_LOG" && fail "port 8025 was intercepted"

# 4. p0 incoming drop, outgoing pass
n=$(maillog_connects "$TB_C1_IP4")
mxb_conf_write "$MXB_DIR/run.conf" drop pass
mxb_reload
expect_glob "dropped c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" REFUSED
m=$(sessions_to "$TB_EXT_IP4:25")
expect_glob "passed c1 to $TB_EXT_IP4:25" "$(tb_banner c1 "$TB_EXT_IP4")" \
	"BANNER 220 ext.example.net*"
[ "$(sessions_to "$TB_EXT_IP4:25")" = "$m" ] || fail "a passed connection reached the proxy"
sleep 0.5
[ "$(maillog_connects "$TB_C1_IP4")" = "$n" ] || fail "a dropped connection reached Postfix"

# 5. p0 incoming pass: Postfix takes the mail and sees the real client
mxb_conf_write "$MXB_DIR/run.conf" pass proxy
mxb_reload
expect_glob "passed c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" \
	"BANNER 220 mx.example.com ESMTP*"
expect_postfix_direct c1 "$TB_C1_IP4" "$TB_SRV_IP4" alice@example.com "t-intercept pass"

# 6. the counters
mxb_stats_expect nfq_incoming_proxy -ge 1 nfq_outgoing_proxy -ge 1 \
	nfq_incoming_pass -ge 1 nfq_incoming_drop -ge 1 nfq_outgoing_pass -ge 1 \
	proxy_accepted_incoming -ge 1 proxy_accepted_outgoing -ge 1 \
	nfq_malformed -eq 0 nfq_errors -eq 0

mxb_down
pass "incoming/outgoing proxy, bypass, drop, pass, non-SMTP untouched, counters"
