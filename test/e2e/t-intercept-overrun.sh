#!/bin/bash
# t-intercept-overrun: a SYN burst that overruns the classifier's netlink
# buffer (queue-buffer 4K) is counted (nfq_overruns) and the classifier
# goes on: a session started after the burst is still classified and
# relayed.  (libuv stops a poll handle on POLLERR, which is how a pending
# overrun shows; the daemon must clear it and poll again.)
. "$(dirname "$0")/t-proxy-common.inc"

proxy_conf "queue-buffer 4K"
proxy_up

# the burst: 400 connections from c1 at once to ext:25, closed again
# (each SYN is queued; the 4K buffer holds a few at a time)
burst() {
	tb_exec c1 timeout 60 python3 - "$TB_EXT_IP4" <<'EOF'
import socket, sys, time
socks = []
for i in range(400):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((sys.argv[1], 25))
    except BlockingIOError:
        pass
    socks.append(s)
time.sleep(2)
for s in socks:
    s.close()
EOF
}
for round in 1 2 3; do
	burst || fail "the burst client failed"
	[ "$(mxb_ctl stats | sed -n 's/^nfq_overruns=//p')" -gt 0 ] 2>/dev/null && break
done
mxb_stats_expect nfq_overruns -gt 0 nfq_queue_open -eq 1
note "overruns: $(mxb_ctl stats | sed -n 's/^nfq_overruns=//p')"

# after the burst: a new session is still classified and relayed
d0=$(mxb_decisions)
n0=$(sink_count "$TB_EXT_DIR")
tb_swaks c1 --server "$TB_EXT_IP4" -f sender@example.org -t rcpt@example.net \
	--header "Subject: t-intercept-overrun after" ||
	fail "swaks after the burst: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
[ "$(mxb_decisions)" -gt "$d0" ] || fail "the classifier decided nothing after the burst"
wait_for sink_count "$TB_EXT_DIR" -gt "$n0" || fail "message after the burst not at the sink"
log_has "from=<sender@example.org> to=<rcpt@example.net> nrcpt=1 size=[0-9]+ disposition=relayed" ||
	fail "the message after the burst was not relayed by the proxy"
grep -q "nfq: queue=.*stopped" "$TB_MXB_LOG" && fail "the queue stopped"

mxb_down
pass "overrun: counted, classifier goes on"
