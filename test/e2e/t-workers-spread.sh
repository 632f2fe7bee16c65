#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-workers-spread: with workers 2 (MXB_TEST_WORKERS) the connections are
# spread over every worker and every worker does its share end to end:
#   - both queues open, each worker logs "worker=I started", status and
#     (checked last) stats say workers=2;
#   - 40 short SMTP sessions from c1 through the outgoing live relay (to
#     the ext sink) and 20 through the incoming proxy (the MTA path, to
#     alice at srv), from 16 source addresses of c1: every message
#     arrives;
#   - every worker's worker.I.proxy_accepted_outgoing and _incoming moved
#     (>= 1 each; the chance that 40 hashed connections all miss one of
#     two workers is 2^-39), and the per-worker lines add up to the summed
#     proxy_accepted_* lines;
#   - every worker's queue classified flows (worker.I.nfq_decisions >= 1)
#     and they add up to the summed nfq decision lines.  --queue-balance
#     picks the queue by a hash of the two addresses (not the ports), so
#     one client-server pair always meets the same queue: hence the 16
#     source addresses (32 pairs; all on one of two queues: 2^-31);
#   - the accept lines name the worker (" worker=I"), every worker's
#     number appears, and the sessions are all closed at the end on every
#     worker (worker.I.proxy_sessions=0).
# classified through the queue (the per-worker queue decisions are counted); t-classify-kernel
# runs the same decisions in the kernel
MXB_CLASSIFIER=queue
. "$(dirname "$0")/t-workers-common.inc"

NOUT=40 NIN=20
# c1's extra source addresses 192.0.2.160 .. 192.0.2.175
SRCS=()
for ((i = 160; i < 176; i++)); do
	tb_exec c1 ip addr add "192.0.2.$i/24" dev eth0 || fail "cannot add 192.0.2.$i to c1"
	SRCS+=("192.0.2.$i")
done
proxy_conf ""
workers_up

# the load: sequential sessions, one message each, every one acknowledged
ip netns exec "$(tb_ns c1)" python3 -c '
import smtplib, sys
nout, nin, ext, srv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
srcs = sys.argv[5:]
def send(i, host, rcpt, subj):
    msg = ("From: <sender@example.org>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n"
           "spread over the workers\r\n" % (rcpt, subj))
    with smtplib.SMTP(host, 25, local_hostname="c1.test.example", timeout=30,
                      source_address=(srcs[i % len(srcs)], 0)) as s:
        s.sendmail("sender@example.org", [rcpt], msg)
for i in range(nout):
    send(i, ext, "rcpt@example.net", "spread-out-%d" % i)
for i in range(nin):
    send(i, srv, "alice@example.com", "spread-in-%d" % i)
print("sent %d + %d" % (nout, nin))
' "$NOUT" "$NIN" "$TB_EXT_IP4" "$TB_SRV_IP4" "${SRCS[@]}" >"$S/load.out" 2>&1 ||
	fail "load: $(tail -n 3 "$S/load.out")"

# every message got through
for ((i = 0; i < NOUT; i++)); do
	wait_for mail_has "$TB_EXT_DIR" "spread-out-$i" || fail "live relay: spread-out-$i not at the ext sink"
done
for ((i = 0; i < NIN; i++)); do
	wait_for -t 30 mail_has "$TB_MAILDIR/alice" "spread-in-$i" ||
		fail "incoming: spread-in-$i not in alice's Maildir"
done
wait_for eval '[ "$(mxb_stat proxy_sessions)" = 0 ]' ||
	fail "sessions left open: $(mxb_wshow proxy_sessions)"

# per worker: each moved, and they add up to the summed lines
for key in proxy_accepted_outgoing proxy_accepted_incoming nfq_decisions; do
	mxb_each_worker "$key" -ge 1 || fail "a worker did not move $key: $(mxb_wshow "$key")"
done
mxb_each_worker proxy_sessions -eq 0 || fail "a worker still counts sessions: $(mxb_wshow proxy_sessions)"
out=$(mxb_wsum proxy_accepted_outgoing)
[ "$out" = "$(mxb_stat proxy_accepted_outgoing)" ] ||
	fail "per-worker outgoing ($(mxb_wshow proxy_accepted_outgoing)) do not add up to proxy_accepted_outgoing=$(mxb_stat proxy_accepted_outgoing)"
[ "$out" -ge "$NOUT" ] || fail "only $out outgoing sessions accepted, want >= $NOUT"
in=$(mxb_wsum proxy_accepted_incoming)
[ "$in" = "$(mxb_stat proxy_accepted_incoming)" ] ||
	fail "per-worker incoming ($(mxb_wshow proxy_accepted_incoming)) do not add up to proxy_accepted_incoming=$(mxb_stat proxy_accepted_incoming)"
[ "$in" -ge "$NIN" ] || fail "only $in incoming sessions accepted, want >= $NIN"
dec=$(mxb_wsum nfq_decisions)
[ "$dec" = "$(mxb_decisions)" ] ||
	fail "per-worker nfq decisions ($(mxb_wshow nfq_decisions)) do not add up to the summed nfq lines ($(mxb_decisions))"
[ "$dec" -ge $((NOUT + NIN)) ] || fail "only $dec flows classified, want >= $((NOUT + NIN))"

# the accept lines name their worker, and every worker took some
for ((i = 0; i < MXB_WORKERS; i++)); do
	grep -Eq "session=[0-9]+ client=192\.0\.2\.1[67][0-9]:[0-9]+ orig_dst=[^ ]+ dir=(incoming|outgoing) port=[^ ]+ worker=$i\$" "$TB_MXB_LOG" ||
		fail "no accept line with worker=$i: $(grep -m1 "session=[0-9]* client=.* port=" "$TB_MXB_LOG")"
done

# stats says how many workers it sums (issue 12's contract)
mxb_stats_expect workers -eq "$MXB_WORKERS"
shown="$(mxb_wshow proxy_accepted_outgoing) $(mxb_wshow proxy_accepted_incoming) $(mxb_wshow nfq_decisions)"
mxb_down
pass "$MXB_WORKERS workers: $NOUT live-relay and $NIN incoming sessions, every message delivered, every worker took some and the per-worker counters add up ($shown)"
