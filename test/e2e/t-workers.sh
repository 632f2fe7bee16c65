#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-workers: the daemon and mxbridge-netfilter agree on the worker queues.
#   - `mxbridge-netfilter up -W 2` spreads new flows by flow hash over
#     queues Q..Q+1 (--queue-balance in the mangle rule) and records w=2
#     in its record (shown by status);
#   - a daemon whose "workers" differs from the script's -W refuses to
#     start with the reason (never a bridge where half of the new flows
#     meet a queue nobody reads);
#   - after `up -W 1` (as the daemon's workers 1) it starts, opens its
#     queue and classifies: c1's SMTP reaches the incoming listener;
#   - workers 2 end to end: `up -W 2` and a daemon with workers 2: it
#     starts, opens both queues Q and Q+1, each worker logs "worker=I
#     started", status and stats say workers=2, and c1's connections
#     are classified and answered, the per-worker decisions adding up
#     to the summed nfq lines.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# classified through the queue (the per-worker queue decisions are counted); t-classify-kernel
# runs the same decisions in the kernel
MXB_CLASSIFIER=queue
. "$(dirname "$0")/../lib.sh"
# the refusal below needs a daemon whose workers differ from -W 2
MXB_WORKERS=1
need iptables nft
tb_init
mxb_setup "$TB_STATE/workers"

mxb_conf_write "$MXB_DIR/run.conf" proxy proxy

# 1. the script spreads over two queues and records it
MXB_WORKERS=2 mxb_nf_up open
q2=$((MXB_QUEUE + 1))
rules=$(tb_exec box iptables-save -t mangle 2>&1)
echo "$rules" | grep -q -- "-j NFQUEUE --queue-balance $MXB_QUEUE:$q2 --queue-bypass" ||
	fail "-W 2: no --queue-balance $MXB_QUEUE:$q2 rule: $(echo "$rules" | grep NFQUEUE)"
st=$(tb_exec box bash "$MXB_NF" status 2>&1)
echo "$st" | grep -q "queue $MXB_QUEUE, workers 2" ||
	fail "status does not show workers 2: $(echo "$st" | head -n 1)"

# 2. the daemon with workers 1 refuses to start beside it
# (mxb_start's own 0.3 s check may see it still starting: wait for the exit)
mxb_start "$MXB_DIR/run.conf" 2>/dev/null
wait_for eval '! mxb_running' || fail "daemon with workers 1 kept running beside -W 2"
wait "$MXB_PID" 2>/dev/null
grep -q "nfq: mxbridge-netfilter spreads flows over 2 queues (-W 2) but workers is 1: refusing to start" \
	"$TB_MXB_LOG" || fail "start refusal lacks the reason: $(tail -n 3 "$TB_MXB_LOG")"
grep -q "nfq: queue=$MXB_QUEUE open" "$TB_MXB_LOG" && fail "the queue was opened before the refusal"

# 3. script and daemon agree: it starts and classifies
mxb_nf_up open
rules=$(tb_exec box iptables-save -t mangle 2>&1)
echo "$rules" | grep -q -- "-j NFQUEUE --queue-num $MXB_QUEUE --queue-bypass" ||
	fail "-W 1: no single-queue rule: $(echo "$rules" | grep NFQUEUE)"
mxb_start_queue "$MXB_DIR/run.conf"
expect_glob "c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"
[ "$(mxb_decisions)" -ge 1 ] || fail "no nfq decision counted: $(mxb_ctl stats | grep ^nfq_)"

mxb_down

# 4. workers 2 end to end: both queues open, both workers started
MXB_WORKERS=2
mxb_conf_write "$MXB_DIR/run2.conf" proxy proxy
grep -qx "workers 2" "$MXB_DIR/run2.conf" || fail "the config lacks workers 2"
mxb_nf_up open
from=$(($(wc -l <"$TB_MXB_LOG") + 1))
mxb_start_queue "$MXB_DIR/run2.conf"
wait_for mxb_queues_open "$from" ||
	fail "workers 2: queues $MXB_QUEUE and $q2 not both open: $(tail -n "+$from" "$TB_MXB_LOG" | grep 'nfq: queue=')"
for i in 0 1; do
	wait_for eval 'tail -n "+$from" "$TB_MXB_LOG" | grep -q "worker=$i started"' ||
		fail "workers 2: no \"worker=$i started\": $(tail -n 3 "$TB_MXB_LOG")"
done
mxb_ctl status | grep -qx "workers=2" || fail "status lacks workers=2: $(mxb_ctl status | tr '\n' ' ')"
# a few connections: every one classified and answered
for i in 1 2 3 4; do
	expect_glob "workers 2: c1 to $TB_SRV_IP4:25 ($i)" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"
done
[ "$(mxb_decisions)" -ge 4 ] || fail "workers 2: $(mxb_decisions) nfq decisions, want >= 4: $(mxb_ctl stats | grep nfq_)"
dec=$(mxb_wsum nfq_decisions)
[ "$dec" = "$(mxb_decisions)" ] ||
	fail "workers 2: per-worker decisions ($(mxb_wshow nfq_decisions)) do not add up to $(mxb_decisions)"
# stats says how many workers it sums (issue 12's contract)
mxb_stats_expect workers -eq 2
mxb_down
pass "-W 2 spreads over queues $MXB_QUEUE:$q2 and is recorded, a daemon with other workers refuses to start, matching -W starts and classifies, workers 2 runs end to end on both queues"
