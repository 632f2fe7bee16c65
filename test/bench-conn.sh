#!/bin/bash
# bench-conn.sh - TCP connection setup rate through the classifier.
#
#   test/bench-conn.sh [-n COUNT] [-c CONCURRENCY] [-r ROUNDS] [-o FILE]
#
# On a testbed of its own, with the real rules (scripts/mxbridge-netfilter)
# and the daemon running, c1 opens COUNT connections one after another and
# COUNT more CONCURRENCY at a time to a plain accept-and-close server on
# 192.0.2.40:25 in the out node (the smtp-sinks' backlog of 64 overflows
# at these rates and would measure the sink), which the policy passes.
# Three paths are measured in the same run:
#   kernel    "classifier kernel" (the default): the daemon's nft table
#             classifies the first packet of every flow (pass) in the
#             kernel;
#   nfqueue   "classifier queue" (set by a reload): the first packet of
#             every flow is queued to the daemon, classified and
#             re-injected with the mark;
#   premarked the same rules, but one rule ahead of both (mxb_premark)
#             marks c1's flows "pass" so that neither classifies them.
# The script's fast path is off (-T 0): with it, the daemon's bridge
# table would keep these passed flows on the bridge from their SYN on,
# and neither classifier measured here would see them.
# Each connection is closed with a reset as soon as it is established
# (no TIME_WAIT).  The parallel connects come from CONCURRENCY processes.
# The paths alternate ROUNDS times and the best rate of each is kept.  Prints a table; with -o appends one JSON line to FILE.
# -n 50 is the smoke mode that make check runs (t-intercept-bench.sh).
# Exit: 0 done, 1 failed, 77 cannot run here (not root, tools missing).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
N=4000 C=16 ROUNDS=3 OUT=
usage() { echo "usage: bench-conn.sh [-n count] [-c concurrency] [-r rounds] [-o file]" >&2; exit 2; }
while getopts ':n:c:r:o:h' opt; do
	case $opt in
	n) N=$OPTARG ;;
	c) C=$OPTARG ;;
	r) ROUNDS=$OPTARG ;;
	o) OUT=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage
for v in "$N" "$C" "$ROUNDS"; do
	case $v in ''|*[!0-9]*|0) usage ;; esac
done
[ "$C" -le "$N" ] || C=$N
case $OUT in ''|/*) ;; *) OUT=$PWD/$OUT ;; esac

. "$(dirname "$0")/lib.sh"
need iptables nft
BIN=${MXB_BIN:-$TB_REPO/build}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
[ -x "$BIN/mxbridge" ] || fail "no $BIN/mxbridge (make first, or set MXB_BIN)"
tb_init
NF=$TB_REPO/scripts/mxbridge-netfilter
S=$TB_STATE/bench
Q=9
DST=192.0.2.40
mxb_statedir "$S"
cat >"$S/bench.conf" <<EOF
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number $Q
classifier kernel
listen incoming port 10025
listen outgoing port 10026
default incoming pass
default outgoing pass
domain "example.com" {
	server $TB_SRV_IP4
}
EOF

# the server: accept and close, backlog as large as the namespace allows
ip -n "$(tb_ns out)" addr add "$DST/24" dev eth0 || fail "cannot add $DST to out"
ip netns exec "$(tb_ns out)" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 25)); s.listen(65535)
while True:
    c, _ = s.accept(); c.close()
' "$DST" </dev/null >"$S/server.log" 2>&1 &
SERVER=$!
tbd_record_pid out bench-server "$SERVER"
wait_for tbd_listening_tcp out "$DST:25" 25 || fail "bench server did not start"

# -T 0: no fast path, so no daemon bridge table either: a passed flow's
# SYN would otherwise stay on the bridge and never meet the classifiers
# measured here (the pass row of bench.sh measures that path)
tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F open -T 0 >"$S/nf.log" 2>&1 ||
	fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
BACKEND=$(tb_exec box bash "$NF" status 2>/dev/null | sed -n '1s/.*: \([a-z]*\) back end.*/\1/p')
mxb_start "$S/bench.conf" || fail "daemon did not start"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" ||
	fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"

# decisions: "KERNEL QUEUE", the flows the kernel table and the queue
# (every worker's) classified so far
decisions() {
	tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" stats | awk -F= '
		$1 == "nfq_kernel_decisions" { k = $2 }
		$1 ~ /^worker\.[0-9]+\.nfq_decisions$/ { q += $2 }
		END { print k + 0, q + 0 }'
}
# classifier kernel|queue: the daemon reloaded with it, and its table
# there (kernel) or gone (queue)
classifier() {
	sed -i "s/^classifier .*/classifier $1/" "$S/bench.conf"
	tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" reload >/dev/null ||
		fail "reload (classifier $1) refused"
	if [ "$1" = kernel ]; then
		wait_for mxb_kernel_table
	else
		wait_for eval '! mxb_kernel_table'
	fi || fail "classifier $1: the kernel table did not follow"
}

# prints "SEQ_RATE PAR_RATE FAILURES STALLS"
LOAD_PY='
import multiprocessing as mp, socket, struct, sys, time
host, port, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
linger = struct.pack("ii", 1, 0)
def connects(k):
    fails = stalls = 0
    for _ in range(k):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.settimeout(5)
        t0 = time.perf_counter()
        try:
            s.connect((host, port))
        except OSError:
            fails += 1
        if time.perf_counter() - t0 > 0.5:
            stalls += 1                  # a SYN was retransmitted
        s.close()
    return fails, stalls
def worker(k, go, out):
    go.wait()
    out.put(connects(k))
connects(min(20, n))                     # warm up: ARP, caches
t = time.perf_counter(); fails, stalls = connects(n)
seq = n / (time.perf_counter() - t)
go, out = mp.Event(), mp.Queue()
share = [n // c + (1 if i < n % c else 0) for i in range(c)]
procs = [mp.Process(target=worker, args=(k, go, out)) for k in share]
for p in procs: p.start()
time.sleep(0.2)
t = time.perf_counter(); go.set()
res = [out.get() for _ in procs]
par = n / (time.perf_counter() - t)
for p in procs: p.join()
print("%.1f %.1f %d %d" % (seq, par, fails + sum(r[0] for r in res),
    stalls + sum(r[1] for r in res)))
'
run_load() { tb_exec c1 python3 -c "$LOAD_PY" "$DST" 25 "$N" "$C"; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }

# measure: one load; its rates in M_SEQ and M_PAR, failures and stalls
# added up
measure() {
	set -- $(run_load) || return 1
	[ $# -eq 4 ] || { echo "load generator said: $*" >&2; return 1; }
	M_SEQ=$1 M_PAR=$2
	fails=$((fails + $3)); stalls=$((stalls + $4))
}
kn_seq=0 kn_par=0 nq_seq=0 nq_par=0 pm_seq=0 pm_par=0 fails=0 stalls=0
kclass=0 qclass=0
wait_for mxb_kernel_table ||
	fail "no kernel classifier table: $(grep nfq: "$TB_MXB_LOG" | tail -n 3)"
for r in $(seq "$ROUNDS"); do
	# kernel, then premarked with the table still there, then the queue
	set -- $(decisions)
	measure || fail "load generator failed"
	kn_seq=$(best "$kn_seq" "$M_SEQ"); kn_par=$(best "$kn_par" "$M_PAR")
	set -- $(decisions) "$@"
	[ "$2" = "$4" ] || fail "the queue classified flows with the kernel table up"
	kclass=$((kclass + $1 - $3))
	d=$(decisions)
	mxb_premark add 0x00030000 || fail "cannot add the premark rule"
	measure || { mxb_premark del; fail "load generator failed"; }
	pm_seq=$(best "$pm_seq" "$M_SEQ"); pm_par=$(best "$pm_par" "$M_PAR")
	mxb_premark del || fail "cannot remove the premark rule"
	[ "$(decisions)" = "$d" ] || fail "premarked flows were classified"
	classifier queue
	set -- $(decisions)
	measure || fail "load generator failed"
	nq_seq=$(best "$nq_seq" "$M_SEQ"); nq_par=$(best "$nq_par" "$M_PAR")
	set -- $(decisions) "$@"
	qclass=$((qclass + $2 - $4))
	classifier kernel
done
# a reused port can meet its old conntrack entry and keep its old class,
# so allow a few flows in a thousand not to be classified
want=$(( (N + (N < 20 ? N : 20) + N) * ROUNDS ))
for c in "$kclass kernel" "$qclass queue"; do
	set -- $c
	[ "$1" -ge $((want - fails - want / 200)) ] ||
		fail "only $1 of $want flows were classified by the $2"
done
[ "$fails" -eq 0 ] || note "$fails connects failed"
st=$(tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" stats)
overruns=$(echo "$st" | sed -n 's/^nfq_overruns=//p')
mxb_stop >/dev/null 2>&1
kill "$SERVER" 2>/dev/null
wait "$SERVER" 2>/dev/null

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
r_seq=$(ratio "$nq_seq" "$pm_seq")
r_par=$(ratio "$nq_par" "$pm_par")
k_seq=$(ratio "$kn_seq" "$pm_seq")
k_par=$(ratio "$kn_par" "$pm_par")
printf '%-22s %14s %18s\n' "path (c1 -> $DST:25)" "seq conn/s" "parallel conn/s"
printf '%-22s %14s %18s\n' "" "(c=1)" "(c=$C)"
printf '%-22s %14.0f %18.0f\n' "kernel classified" "$kn_seq" "$kn_par"
printf '%-22s %14.0f %18.0f\n' "nfqueue classified" "$nq_seq" "$nq_par"
printf '%-22s %14.0f %18.0f\n' "premarked, no queue" "$pm_seq" "$pm_par"
printf '%-22s %14s %18s\n' "ratio kernel/premark" "$k_seq" "$k_par"
printf '%-22s %14s %18s\n' "ratio nfqueue/premark" "$r_seq" "$r_par"
echo "count=$N rounds=$ROUNDS backend=$BACKEND classified=$kclass+$qclass failed=$fails stalls=$stalls overruns=${overruns:-?}"
if [ -n "$OUT" ]; then
	printf '{"bench":"conn","count":%d,"concurrency":%d,"rounds":%d,"backend":"%s","kernel":{"seq":%s,"par":%s},"nfqueue":{"seq":%s,"par":%s},"premarked":{"seq":%s,"par":%s},"ratio":{"seq":%s,"par":%s},"ratio_kernel":{"seq":%s,"par":%s},"classified":%d,"failed":%d,"stalls":%d,"time":"%s"}\n' \
		"$N" "$C" "$ROUNDS" "$BACKEND" "$kn_seq" "$kn_par" "$nq_seq" "$nq_par" "$pm_seq" "$pm_par" \
		"$r_seq" "$r_par" "$k_seq" "$k_par" "$((kclass + qclass))" "$fails" "$stalls" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$OUT" ||
		fail "cannot write $OUT"
fi
exit 0
