#!/bin/bash
# crash-load.sh - durability under load: kill -9 the daemon in the middle
# of a load of a few thousand messages, restart it, and check that every
# message whose client got a 250 is delivered (counted at the sink), and
# count the duplicates.
#
#   test/crash-load.sh [-n MESSAGES] [-c SESSIONS] [-k FRACTION] [-s BYTES]
#                      [-W WORKERS] [-K] [-F]
#
#   -n  messages to send (default 3000)      -c  parallel sessions (20)
#   -k  kill when this fraction was acknowledged (0.4)
#   -s  message size in bytes (4096)         -K  no kill: throughput only
#   -F  queue fsync no (for comparison; durability is not promised then)
#   -W  worker threads: the daemon's "workers" and mxbridge-netfilter's
#       -W (default 1); with more than one (and -c 16 or more), every
#       worker must have taken some of the sessions before the kill
#
# The load is a python3 client (several messages per session, one line
# per acknowledged message in a file, so the 250s are known exactly);
# outgoing mail through the MTA to example.net, delivered by MX to the
# mx21 sink of the testbed.  Exit 0 when nothing acknowledged is missing.
# Prints "crash-load: ..." with the counts and the rates.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
N=3000 C=20 KILLAT=0.4 SIZE=4096 NOKILL= FSYNC=yes W=1
while getopts n:c:k:s:W:KF opt; do
	case $opt in
	n) N=$OPTARG ;; c) C=$OPTARG ;; k) KILLAT=$OPTARG ;; s) SIZE=$OPTARG ;;
	W) W=$OPTARG ;; K) NOKILL=1 ;; F) FSYNC=no ;;
	*) echo "usage: $0 [-n N] [-c C] [-k F] [-s BYTES] [-W WORKERS] [-K] [-F]" >&2; exit 2 ;;
	esac
done
TB_TEST=crash-load
. "$(dirname "$0")/lib.sh"
need iptables python3
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
NF=$TB_REPO/scripts/mxbridge-netfilter
S=$TB_STATE/crash
Q=7
mxb_statedir "$S"
cat >"$S/run.conf" <<CONF
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number $Q
workers $W
listen incoming port 10025
listen outgoing port 10026
default incoming proxy
default outgoing proxy
client-server default ignore
match client $TB_PREFIX4 relay
limits {
	connections-per-client 0
	messages-per-session 100000
}
queue {
	retry-min 1s
	retry-max 1m
	fsync $FSYNC
	concurrency 20
}
CONF
ctl() { tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" "$@"; }
stat_is() { ctl stats 2>/dev/null | sed -n "s/^$1=//p"; }

# the worker queues Q .. Q+W-1 are open (lib.sh's MXB_* for its helpers)
MXB_QUEUE=$Q MXB_WORKERS=$W MXB_DIR=$S MXB_BINDIR=$BIN
queues_open() { wait_for mxb_queues_open "$1" || fail "queues $Q..$((Q + W - 1)) not all open: $(grep 'nfq: queue=' "$TB_MXB_LOG" | tail -n 3)"; }
tb_exec box bash "$NF" up -b br0 -q $Q -W "$W" -i 10025 -o 10026 -F open \
	>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
mxb_start "$S/run.conf" ${MXB_ARGS:-} || fail "daemon did not start"
queues_open 1

# the load: C sessions from c1 to the (not honoured) ext server
: >"$S/acked"
ip netns exec "$(tb_ns c1)" python3 -c '
import os, smtplib, sys, threading, time
n, c, size, srv, acked = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
fd = os.open(acked, os.O_WRONLY | os.O_APPEND)
lock = threading.Lock()
nxt = [0]
pad = ("x" * 76 + "\r\n") * max(1, size // 78)
def take():
    with lock:
        if nxt[0] >= n:
            return None
        nxt[0] += 1
        return nxt[0]
def worker():
    s = None
    while True:
        seq = take()
        if seq is None:
            break
        try:
            if s is None:
                s = smtplib.SMTP(srv, 25, local_hostname="c1.load", timeout=20)
            msg = ("From: <load@example.org>\r\nTo: <r%d@example.net>\r\n"
                   "Subject: load %d\r\nX-Load-Seq: %d\r\n\r\n%s" % (seq, seq, seq, pad))
            s.sendmail("load@example.org", ["r%d@example.net" % seq], msg)
            os.write(fd, b"%d\n" % seq)
        except Exception as e:
            return
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(c)]
for t in ts: t.start()
for t in ts: t.join()
print("load-done %.3f" % (time.time() - t0))
' "$N" "$C" "$SIZE" "$TB_EXT_IP4" "$S/acked" >"$S/load.out" 2>&1 &
LOAD=$!
t0=$(date +%s.%N)

if [ "$W" -gt 1 ] && [ "$C" -ge 16 ]; then
	# every worker took some of the C sessions (each load thread opens
	# its session at once and keeps it; with 16 or more the chance that
	# the kernel's hash puts all of them on one of two workers is below
	# 2^-15); checked before the kill, which this does not delay
	wait_for -t 60 mxb_each_worker proxy_accepted_outgoing -ge 1 ||
		fail "not every worker took sessions: $(mxb_wshow proxy_accepted_outgoing)"
	perworker=$(mxb_wshow proxy_accepted_outgoing)
fi
killed=
if [ -z "$NOKILL" ]; then
	want=$(python3 -c "print(int($N * $KILLAT))")
	wait_for -t 300 eval '[ "$(wc -l <"$S/acked")" -ge '"$want"' ]' ||
		fail "the load did not reach $want acknowledged messages"
	pid=$(tr -dc 0-9 <"$TB_MXB_PIDFILE")
	kill -KILL "$pid"
	t1=$(date +%s.%N)
	killed=$(wc -l <"$S/acked")
	wait "$pid" 2>/dev/null
	# no more load: what the client sends now would bypass the box
	kill "$LOAD" 2>/dev/null
	wait "$LOAD" 2>/dev/null
	acked=$(wc -l <"$S/acked")
	inspool=$(find "$S/spool/queue" -type f ! -name '*.st' | wc -l)
	from=$(($(wc -l <"$TB_MXB_LOG") + 1))
	mxb_start "$S/run.conf" || fail "daemon did not restart"
	queues_open "$from"
else
	wait "$LOAD"
	t1=$(date +%s.%N)
	acked=$(wc -l <"$S/acked")
	inspool=0
fi
wait_for -t 600 eval '[ "$(stat_is queue_messages)" = 0 ]' ||
	fail "the queue did not drain: $(ctl stats)"
t2=$(date +%s.%N)
sleep 2

grep -rh '^X-Load-Seq:' "$TB_MX_DIR" | awk '{print $2}' | sort -n >"$S/delivered"
delivered=$(wc -l <"$S/delivered")
uniq_delivered=$(sort -un "$S/delivered" | wc -l)
dups=$((delivered - uniq_delivered))
sort -n "$S/acked" >"$S/acked.sorted"
missing=$(comm -23 <(sort -u "$S/acked.sorted") <(sort -u "$S/delivered") | wc -l)
extra=$(comm -13 <(sort -u "$S/acked.sorted") <(sort -u "$S/delivered") | wc -l)
rate_in=$(python3 -c "print('%.0f' % ($acked / max(0.001, $t1 - $t0)))")
rate_out=$(python3 -c "print('%.0f' % ($uniq_delivered / max(0.001, $t2 - $t0)))")
corrupt=$(find "$S/spool/corrupt" -type f | wc -l)
batches=$(stat_is spool_batches) ops=$(stat_is spool_ops)
echo "crash-load: sent=$N sessions=$C size=$SIZE fsync=$FSYNC workers=$W${perworker:+ ($perworker)}" \
	"acked=$acked acked_at_kill=${killed:-none} in_spool_at_kill=$inspool" \
	"delivered=$delivered unique=$uniq_delivered duplicates=$dups" \
	"missing=$missing unacked_delivered=$extra corrupt=$corrupt" \
	"accept_rate=${rate_in}/s end_to_end=${rate_out}/s" \
	"spool_batches=$batches spool_ops=$ops (since the last start)"
[ "$missing" = 0 ] || fail "$missing acknowledged messages were lost: $(comm -23 <(sort -u "$S/acked.sorted") <(sort -u "$S/delivered") | head -n 5 | tr '\n' ' ')"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" && fail "sanitizer report"
mxb_stop 10 || fail "daemon needed SIGKILL to stop"
pass "no acknowledged message lost ($acked acked, $dups duplicates)"
