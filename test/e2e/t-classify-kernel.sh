#!/bin/bash
# t-classify-kernel: "classifier kernel" (the default).  The daemon
# publishes its classification as the nft table inet mxbridge_classify
# (flags owner) and new SMTP flows are classified in the kernel, without
# the NFQUEUE round trip, with the same decisions as the queue
# (t-intercept-v4 and -v6 run the queue):
#   - incoming and outgoing proxy over IPv4 and IPv6 (the server's other
#     SMTP port is outgoing, as its address and port make the server),
#     bypass client and
#     bypass server reach the real server, non-SMTP is untouched, drop is
#     refused and pass reaches the real server after a reload; the queue
#     decides none of it (no per-flow queue line, per-worker queue
#     decisions 0) and the decision counters count it;
#   - a passed flow enters the bridge's fast path;
#   - nobody else may delete the table; "classifier queue" at reload
#     removes it and the queue decides again, "kernel" brings it back;
#   - SIGTERM removes it; after kill -9 the kernel removes it with the
#     daemon's socket and the script's fail-open passes new flows.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup
KT="inet mxbridge_classify"
conf() {
	MXB_CLASSIFIER=${3:-kernel} mxb_conf_write "$MXB_DIR/run.conf" "$1" "$2" mx.example.com
	echo "bypass server $TB_MX_IP4" >>"$MXB_DIR/run.conf"
}
loaded() { [ "$(grep -c "kernel classifier loaded" "$TB_MXB_LOG")" -gt "$1" ]; }
queue_lines() { grep -c "nfq: src=" "$TB_MXB_LOG"; }

conf proxy proxy
# SMTP on 25 and 587: the protected server is its address and port 25,
# so a flow to its 587 is outgoing (the queue's policy_classify, too)
MXBRIDGE_SMTP_PORTS=25,587 mxb_nf_up open
mxb_start_queue "$MXB_DIR/run.conf"
wait_for loaded 0 || fail "no kernel classifier: $(grep nfq: "$TB_MXB_LOG" | tail -n 3)"
tb_exec box nft list table $KT | grep -q "flags owner" || fail "the table has no owner flag"

# 1. proxy, both directions and families, decided in the kernel
expect_glob "c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"
expect_glob "c1 to [$TB_SRV_IP6]:25" "$(tb_banner c1 "$TB_SRV_IP6")" "BANNER 220 gw.example.com *"
expect_glob "c1 to $TB_EXT_IP4:25" "$(tb_banner c1 "$TB_EXT_IP4")" "BANNER 220 *"
expect_glob "c1 to [$TB_EXT_IP6]:25" "$(tb_banner c1 "$TB_EXT_IP6")" "BANNER 220 *"
tb_banner c1 "$TB_SRV_IP4" 587 >/dev/null
for d in "$TB_SRV_IP4:25 dir=incoming" "\[$TB_SRV_IP6\]:25 dir=incoming" \
	"$TB_EXT_IP4:25 dir=outgoing" "\[$TB_EXT_IP6\]:25 dir=outgoing" \
	"$TB_SRV_IP4:587 dir=outgoing"; do
	grep -Eq "session=[0-9]+ client=[^ ]+ orig_dst=$d port=p0" "$TB_MXB_LOG" ||
		fail "no session orig_dst=$d: $(grep session= "$TB_MXB_LOG")"
done
[ "$(maillog_connects "$TB_C1_IP4")" = 0 ] || fail "a proxied connection reached Postfix"

# 2. bypass client (c2) and bypass server ($TB_MX_IP4): the real servers
expect_glob "bypassed c2 to $TB_SRV_IP4:25" "$(tb_banner c2 "$TB_SRV_IP4")" \
	"BANNER 220 mx.example.com ESMTP*"
wait_for maillog_has "connect from unknown\[$TB_C2_IP4\]" ||
	fail "Postfix did not see the bypassed client $TB_C2_IP4"
n=$(grep -c "orig_dst=$TB_MX_IP4:25" "$TB_MXB_LOG")
tb_banner c1 "$TB_MX_IP4" | grep -q "^BANNER 220" || fail "c1 to the bypassed server $TB_MX_IP4"
[ "$(grep -c "orig_dst=$TB_MX_IP4:25" "$TB_MXB_LOG")" = "$n" ] ||
	fail "a flow to the bypassed server reached the proxy"

# 3. non-SMTP crosses untouched
before=$(mxb_decisions)
tb_hello_start srv 8025 4 || fail "test server on 8025 did not start"
r=$(tb_banner c1 "$TB_SRV_IP4" 8025)
tb_hello_stop
expect_glob "c1 to $TB_SRV_IP4:8025" "$r" "BANNER hello $TB_C1_IP4"
[ "$(mxb_decisions)" = "$before" ] || fail "non-SMTP traffic was classified"

# the queue decided none of it; the kernel's counters count all of it
[ "$(queue_lines)" = 0 ] || fail "the queue decided: $(grep "nfq: src=" "$TB_MXB_LOG" | head -n 3)"
wq=$(mxb_ctl stats | grep '^worker\.[0-9]*\.nfq_decisions=')
[ -n "$wq" ] && ! grep -qv '=0$' <<<"$wq" || fail "queue decisions: ${wq//$'\n'/ }"
mxb_stats_expect nfq_kernel -eq 1 nfq_kernel_decisions -ge 7 \
	nfq_incoming_proxy -ge 2 nfq_outgoing_proxy -ge 3 nfq_incoming_pass -ge 1 \
	nfq_outgoing_pass -ge 1

# 4. the table is the daemon's alone
tb_exec box nft delete table $KT 2>/dev/null && fail "another process deleted the table"
mxb_kernel_table || fail "the table is gone"

# 5. reload: p0 incoming drop, outgoing pass; a passed flow takes the
#    bridge's fast path
conf drop pass
mxb_reload
wait_for eval '[ "$(mxb_ctl stats | grep -c "^nfq_kernel=1")" = 1 ] &&
	tb_exec box nft list map $KT pout | grep -q "0x0003"' ||
	fail "the pass class was not published: $(tb_exec box nft list map $KT pout)"
n=$(maillog_connects "$TB_C1_IP4")
expect_glob "dropped c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" REFUSED
m=$(grep -c "orig_dst=$TB_EXT_IP4:25" "$TB_MXB_LOG")
expect_glob "passed c1 to $TB_EXT_IP4:25" "$(tb_banner c1 "$TB_EXT_IP4")" "BANNER 220 ext.example.net*"
[ "$(grep -c "orig_dst=$TB_EXT_IP4:25" "$TB_MXB_LOG")" = "$m" ] || fail "a passed flow reached the proxy"
tb_exec box bash "$MXB_NF" status | grep -q "^# fast path: IPv4 flows: [1-9]" ||
	fail "the passed flow is not on the fast path: $(tb_exec box bash "$MXB_NF" status | grep fast)"
sleep 0.5
[ "$(maillog_connects "$TB_C1_IP4")" = "$n" ] || fail "a dropped connection reached Postfix"
mxb_stats_expect nfq_incoming_drop -ge 1

# 6. classifier queue: the table goes, the queue decides; and back
conf pass proxy queue
mxb_reload
wait_for eval '! mxb_kernel_table' || fail "classifier queue: the table stayed"
grep -q "kernel classifier removed" "$TB_MXB_LOG" || fail "the removal was not logged"
expect_glob "queue: passed c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" \
	"BANNER 220 mx.example.com ESMTP*"
wait_for eval '[ "$(queue_lines)" -ge 1 ]' || fail "the queue did not decide"
mxb_stats_expect nfq_kernel -eq 0
conf proxy proxy
mxb_reload
wait_for loaded 1 || fail "classifier kernel again: not loaded"
q=$(queue_lines)
expect_glob "kernel again: c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"
[ "$(queue_lines)" = "$q" ] || fail "the queue decided after the table came back"

# 7. SIGTERM removes the table
mxb_down
mxb_kernel_table && fail "the table outlived the daemon's SIGTERM"

# 8. kill -9: the kernel removes it with the socket; fail-open passes
mxb_start_queue "$MXB_DIR/run.conf"
wait_for loaded 2 || fail "restart: not loaded"
mxb_kill
wait_for eval '! mxb_kernel_table' || fail "the table outlived kill -9"
expect_glob "daemon dead, fail-open: c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" \
	"BANNER 220 mx.example.com ESMTP*"
pass "kernel classification: proxy v4/v6 both ways, bypass, non-SMTP, drop, pass on the fast path, owner table, queue fallback, SIGTERM and kill -9"
