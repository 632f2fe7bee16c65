#!/bin/sh
# bench.sh - side-by-side performance figures of mxbridge and its peers
# (make bench).
#
#   test/bench.sh [-n MESSAGES] [-s SIZE_KB] [-c SESSIONS] [-o results.json]
#                 [-i IDLE_SESSIONS] [-l LATENCY_SAMPLES] [-r ROUNDS] [--smoke]
#
# Defaults: -n 5000 -s 10 -c 20 -i 10000 -l 300 -r 3 (about 2 minutes on
# 2 cores); --smoke: -n 200 -c 5 -i 200 -l 20 -r 1, scaling rows at 1
# and 2 threads only (about 35 s).
#
# On a namespace testbed of its own (test/testbed.sh, torn down on exit),
# smtp-source in c1 sends MESSAGES messages of SIZE_KB KB over SESSIONS
# parallel sessions (one connection per message) to an smtp-sink in the
# "out" node, through nine paths:
#
#   1 direct         no interception, c1 -> sink across the bridge
#   2 HAProxy        layer-4 transparent relay in the box: TPROXY to the
#                    outgoing listener port (the real mxbridge-netfilter
#                    rules, c1's flows pre-marked "outgoing" so that they
#                    never reach the queue), forwarded to the original
#                    destination ("server 0.0.0.0")
#   3 mxbridge       outgoing proxy, client-chosen server honoured (live relay)
#   4 mxbridge       pass mode (classified by the daemon, forwarded untouched)
#   5 Postfix        store-and-forward relay in the box (explicit relay at
#                    192.0.2.2:25, relayhost = the sink, durable queue as
#                    shipped): accepted/s and delivered/s
#   6 mxbridge       incoming proxy into the queue (fsync yes) and on to the
#                    protected server, which is a sink: accepted/s, delivered/s
#   7 Postfix        row 5 with rspamd as its smtpd_milters
#   8 mxbridge       row 6 with the same rspamd as its milter
#   9 mxbridge       row 3 with the same rspamd as its milter
#  10 mxbridge       row 3 with the metrics endpoint on, scraped every second
#  11 mxbridge       row 6 with the metrics endpoint on, scraped every second
#
# with the proxy's CPU time (utime+stime of the process and its children,
# from /proc) and each mxbridge row's ratio to its peer (3:2, 4:1, 6:5,
# 8:7, 9:3, 10:3, 11:6).  Rows 10 and 11: a scraper in the box (bench.py
# scrape) GETs /metrics every second for the whole run, and the run
# checks that it got an answer every second of the load.  Rows 7-9 share one rspamd (test/engines.inc: a proxy worker
# in milter mode with self_scan, count 1, the network modules off, no
# milter debug log) in the box on 127.0.0.1:11332, and record its CPU per
# message beside the proxy's; each run checks that rspamd scanned every
# message (its per-message log line), so no row is credited with mail the
# milter did not see.  Without rspamd installed the rows are n/a.
# Every row runs ROUNDS times, each mxbridge row right after its peer; the
# table shows the best run of each (other work on the machine only ever
# slows a run down), the JSON every run and the per-round ratios.  Each
# mxbridge run checks the daemon's counters (mxbridgectl stats) and the
# HAProxy run the TPROXY/NFQUEUE rule counters, so a row is never credited
# with traffic that took another path.
# Rows 3, 4 and 6 run the daemon with "workers 1" (BENCH_MXB_WORKERS=N
# for another count; mxbridge-netfilter -W follows it).  Every mxbridge
# row classifies new flows with "classifier kernel" (the daemon's nft
# table; BENCH_CLASSIFIER=queue for the NFQUEUE round trip instead).
# Scaling table (rows s2, s3, s6, or all three as "scale"): at each thread
# count W of BENCH_WORKERS (default 1 2 4 .. up to nproc, and nproc) HAProxy
# with nbthread W (row 2's path), the live relay (row 3's path) and the
# incoming proxy (row 6's path) with "workers W" and mxbridge-netfilter
# -W W: msg/s, CPU ms per message, mxbridge:HAProxy at equal threads.
# Where nproc >= 2W+2 the proxy runs on cores 0..W-1 and smtp-source and
# the sinks on the others (taskset); otherwise all share every core; the
# table says which (BENCH_PIN=yes pins whenever nproc > W, BENCH_PIN=no
# never).  With W > 1 a run also checks that more than one
# worker took connections (worker.I.proxy_accepted_* of mxbridgectl stats).
# Then: IDLE_SESSIONS concurrent idle sessions held by the incoming proxy
# (RSS per session, banner of a new session within 1 s), added latency per
# message (median, p99) of the live relay and the incoming proxy against the
# direct path, PASSED_FLOWS flows held open through pass mode on the bridge's
# fast path (idle, a line on each; idle past the fast path's timeout, a line
# on each again: none may break; the set's size and memory), and the
# connection setup rate (test/bench-conn.sh, which
# runs on a testbed of its own).
#
# A row whose path does not work prints "n/a (reason)"; no number is ever
# made up.  Results go to -o FILE (JSON; default $MXB_BIN/bench-results.json)
# with the date, nproc and the parameters.  --smoke: tiny counts, for
# make check (test/e2e/t-bench-smoke.sh).  BENCH_KEEP=1 keeps the work
# folder, TB_KEEP=1 the testbed.  For work on one path: BENCH_ROWS="2 3"
# runs only those rows (and of the sections after them only those named:
# latency, concurrency, passflows, connrate; the run then exits 1;
# "scale" = s2 s3 s6, e.g. BENCH_ROWS="3 scale" BENCH_WORKERS="1 2"),
# BENCH_PERF=1 records the whole machine with perf (cpu-clock, call
# graphs) during each measured load, into the work folder (set
# BENCH_KEEP too); BENCH_NSTAT=1 keeps the box's network counters (nstat)
# of each measured load.  Exit: 0 every row measured, 1 some row
# n/a or daemon trouble, 77 cannot run here (not root, tools missing).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u

usage() {
	echo "usage: bench.sh [-n messages] [-s size_kb] [-c sessions] [-o results.json]" >&2
	echo "                [-i idle_sessions] [-l latency_samples] [-r rounds]" >&2
	echo "                [-p passed_flows] [--smoke]" >&2
	exit 2
}

# ---------------------------------------------------------------- options
SMOKE=0
for a in "$@"; do [ "$a" = --smoke ] && SMOKE=1; done
if [ $SMOKE = 1 ]; then
	MSGS=200 SIZE_KB=10 SESS=5 IDLE=200 LAT_N=20 CONN_N=50 ROUNDS=1 PASSN=200
else
	MSGS=5000 SIZE_KB=10 SESS=20 IDLE=10000 LAT_N=300 CONN_N=2000 ROUNDS=3 PASSN=10000
fi
OUT=
while [ $# -gt 0 ]; do
	case $1 in
	-n) [ $# -ge 2 ] || usage; MSGS=$2; shift 2 ;;
	-s) [ $# -ge 2 ] || usage; SIZE_KB=$2; shift 2 ;;
	-c) [ $# -ge 2 ] || usage; SESS=$2; shift 2 ;;
	-o) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
	-i) [ $# -ge 2 ] || usage; IDLE=$2; shift 2 ;;
	-l) [ $# -ge 2 ] || usage; LAT_N=$2; shift 2 ;;
	-r) [ $# -ge 2 ] || usage; ROUNDS=$2; shift 2 ;;
	-p) [ $# -ge 2 ] || usage; PASSN=$2; shift 2 ;;
	--smoke) shift ;;
	-h|--help) usage ;;
	*) usage ;;
	esac
done
for v in "$MSGS" "$SIZE_KB" "$SESS" "$IDLE" "$LAT_N" "$ROUNDS" "$PASSN"; do
	case $v in ''|*[!0-9]*|0) usage ;; esac
done
[ "$SESS" -le "$MSGS" ] || SESS=$MSGS

. "$(dirname "$0")/lib.sh"
need smtp-source smtp-sink postfix postconf haproxy iptables nft
BIN=${MXB_BIN:-$TB_REPO/build}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
export MXB_BIN=$BIN
[ -n "$OUT" ] || OUT=$BIN/bench-results.json
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
mkdir -p "$(dirname "$OUT")" || fail "cannot create the folder of $OUT"
BPY=$TB_LIB_DIR/bench/bench.py
NF=$TB_REPO/scripts/mxbridge-netfilter
need taskset
. "$TB_LIB_DIR/engines.inc"

# workers of rows 3, 4 and 6; thread counts of the scaling rows (default
# 1 2 4 .. below nproc, then nproc)
NPROC=$(nproc)
MXB_W=${BENCH_MXB_WORKERS:-1}
BENCH_CLASSIFIER=${BENCH_CLASSIFIER:-kernel}
case $BENCH_CLASSIFIER in kernel|queue) ;; *) fail "BENCH_CLASSIFIER: kernel or queue, not '$BENCH_CLASSIFIER'" ;; esac
case $MXB_W in ''|*[!0-9]*|0) fail "BENCH_MXB_WORKERS: not a number of workers: '$MXB_W'" ;; esac
if [ -n "${BENCH_WORKERS:-}" ]; then
	SCALE_W=$BENCH_WORKERS
elif [ $SMOKE = 1 ]; then
	SCALE_W="1 2"
else
	SCALE_W='' w=1
	while [ $w -lt "$NPROC" ]; do SCALE_W="$SCALE_W $w"; w=$((w * 2)); done
	SCALE_W="${SCALE_W# } $NPROC"
	SCALE_W=${SCALE_W# }
fi
for w in $SCALE_W; do
	case $w in ''|*[!0-9]*|0) fail "BENCH_WORKERS: not a list of thread counts: '$SCALE_W'" ;; esac
done

BYTES=$((SIZE_KB * 1024))
WARM=$((SESS * 2))
[ "$WARM" -le 100 ] || WARM=100
Q=7                             # netfilter queue (per network namespace)
INPORT=10025 OUTPORT=10026      # transparent listeners (mxbridge, HAProxy)
RS_ADDR=127.0.0.1 RS_PORT=11332 # rspamd's milter in the box (rows 7-9)
MET_PORT=9154                   # the metrics endpoint (rows 10, 11)
SINK_IP=192.0.2.40              # sink of the outgoing and direct paths
PROT_IP=192.0.2.41              # sink that is the protected domain's server
RCPT_OUT=bench@example.net      # an outgoing recipient
RCPT_IN=bench@example.com       # a recipient of the protected domain
# how long a queued path may take to deliver everything
DELIVER_TMO=$((MSGS / 20 + 60))

# ---------------------------------------------------------------- state
HAPROXY_PID='' PF_DIR='' BT='' ROUND=1 SRC_PIN=''
bench_cleanup() {
	local rc=$?
	[ -n "$HAPROXY_PID" ] && tbd_pid_in_ns "$HAPROXY_PID" box && kill "$HAPROXY_PID" 2>/dev/null
	[ -n "$PF_DIR" ] && [ -f "$PF_DIR/etc/main.cf" ] &&
		tb_exec box postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1
	if [ -n "${BENCH_KEEP:-}" ]; then
		echo "bench: BENCH_KEEP set: work files left in $BT" >&2
	else
		case $BT in /var/tmp/mxbench.*) rm -rf "$BT" ;; esac
	fi
	(exit "$rc")
	tb__cleanup
}

tb_init "mxbb$$"
trap bench_cleanup EXIT
BT=$(mktemp -d /var/tmp/mxbench.XXXXXX) || fail "mktemp"
chmod 755 "$BT"                 # Postfix (user postfix) needs its queue below
RES=$BT/results.jsonl
: >"$RES"

say() { echo "bench: $*" >&2; }
now_ns() { date +%s%N; }
# rate COUNT NANOSECONDS
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", (t > 0) ? n * 1e9 / t : 0 }'; }
secs() { awk -v t="$1" 'BEGIN { printf "%.3f", t / 1e9 }'; }
add() { python3 "$BPY" add "$RES" "$@"; }
note_add() { say "note: $*"; add kind=note "text=$*"; }
cpu() { python3 "$BPY" cpu "$1" 2>/dev/null || echo -; }
# context switches of each thread of PID (voluntary nonvoluntary)
ctxsw() {
	local t
	[ -n "$1" ] || return 0
	for t in /proc/"$1"/task/*; do
		echo "$(cat "$t/comm") $(awk '/ctxt_switches/ { printf "%s ", $2 }' "$t/status")"
	done
}
# idle ticks of the whole machine so far (all CPUs, from /proc/stat)
idle_ticks() { awk '$1 == "cpu" { print $5 + $6; exit }' /proc/stat; }
# CPU seconds between two "cpu" readings; empty when unknown
cpu_delta() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print ""; else printf "%.2f", b - a }'; }
oneline() { tr '\n' ' ' | tr -s ' ' | sed 's/ *$//' | cut -c1-"${1:-200}"; }

# ---------------------------------------------------------------- meta
FSTYPE=$(stat -f -c %T "$BT" 2>/dev/null)
add kind=meta "date=$(date -Iseconds)" "nproc=$(nproc)" "messages=$MSGS" \
	"size_kb=$SIZE_KB" "sessions=$SESS" "smoke=$SMOKE" "warmup=$WARM" \
	"idle_sessions=$IDLE" "latency_samples=$LAT_N" "rounds=$ROUNDS" \
	"kernel=$(uname -r)" "classifier=$BENCH_CLASSIFIER" \
	"cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" \
	"loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)" \
	"haproxy=$(haproxy -v 2>/dev/null | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p')" \
	"postfix=$(postconf -d -h mail_version 2>/dev/null)" \
	"rspamd=$(rspamd --version 2>/dev/null | sed -n '1s/.*version \([^ ]*\).*/\1/p')" \
	"rspamd_config=rows 7-9: test/engines.inc eng_rspamd in the box on $RS_ADDR:$RS_PORT, one proxy worker (milter, self_scan), network modules off, no milter debug log; Postfix: smtpd_milters, milter_default_action tempfail; mxbridge: milters incoming/outgoing, content-timeout 30s" \
	"spool_fs=$FSTYPE" "testbed=$TB_NAME" "mxbridge_bin=$BIN" \
	"load=smtp-source -m $MSGS -l $BYTES -s $SESS from c1 (one connection per message); smtp-sink -c in out" \
	"cpu_time=utime+stime+cutime+cstime of the proxy process and its live children (/proc), 10 ms ticks" \
	"haproxy_config=nbthread default, bind :$OUTPORT transparent, server 0.0.0.0 (original destination); c1's flows pre-marked outgoing ahead of the NFQUEUE rule" \
	"mxbridge_workers=$MXB_W" "scale_workers=$SCALE_W" \
	"scale_config=HAProxy as row 2 with nbthread W; mxbridge as rows 3 and 6 with workers W and mxbridge-netfilter -W W; proxy on its own cores (taskset) where nproc >= 2W+2 (BENCH_PIN=${BENCH_PIN:-auto})" \
	"postfix_config=explicit relay on $TB_BOX_IP4:25 (no interception), relayhost [$SINK_IP]:25, main.cf defaults (durable queue) except paths, mynetworks, no DNS (smtp_dns_support_level=disabled, smtpd_peername_lookup=no)"
[ "$FSTYPE" = tmpfs ] && note_add "spool and Postfix queue on tmpfs: fsync costs nothing here"
case $(cut -d' ' -f1 /proc/loadavg) in
0.*|1.[0-4]*) ;;
*) note_add "load average $(cut -d' ' -f1-3 /proc/loadavg) at the start: other work shares the $(nproc) cores" ;;
esac

# ---------------------------------------------------------------- sinks
# two sinks in "out", beside the testbed's own (which dump every message
# to a file): SINK_IP for the outgoing paths, PROT_IP as protected server
start_sink() {	# TAG IP
	tb_exec out ip addr add "$2/24" dev eth0 || return 1
	ip netns exec "$TB_NAME-out" smtp-sink -c -u nobody "$2:25" 4096 \
		</dev/null >"$BT/sink-$1.out" 2>"$BT/sink-$1.err" &
	tbd_record_pid out "bench-sink-$1" $!
	SINK_PIDS="$SINK_PIDS $!"
	wait_for tbd_listening_tcp out "$2:25" 25
}
# messages the sink TAG has received so far (its -c counter)
bsink() {
	local n
	n=$(tail -c 300 "$BT/sink-$1.out" 2>/dev/null | tr '\r' '\n' |
		sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -n 1)
	echo "${n:-0}"
}
# wait until sink TAG has at least N messages, up to T seconds; prints
# the time (ns) it got there
bsink_wait() {	# TAG N T
	local end=$((SECONDS + $3))
	while [ "$(bsink "$1")" -lt "$2" ]; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.02
	done
	now_ns
}
SINK_PIDS=''
start_sink out "$SINK_IP" || fail "sink on $SINK_IP did not start"
start_sink prot "$PROT_IP" || fail "sink on $PROT_IP did not start"

# ---------------------------------------------------------------- load
# source DST RCPT COUNT: smtp-source from c1; SRC_T0, SRC_NS, SRC_ERR
source_run() {
	local t1 rc
	SRC_T0=$(now_ns)
	# shellcheck disable=SC2086  # SRC_PIN: "taskset -c CPUS" or nothing
	tb_exec c1 $SRC_PIN timeout "$DELIVER_TMO" smtp-source -m "$3" -l "$BYTES" -s "$SESS" \
		-M c1.bench.example -f bench@c1.bench.example -t "$2" "$1:25" \
		>"$BT/source.out" 2>&1
	rc=$?
	[ $rc = 124 ] && echo "smtp-source: timed out after $DELIVER_TMO s" >>"$BT/source.out"
	t1=$(now_ns)
	SRC_NS=$((t1 - SRC_T0))
	SRC_ERR=$(grep -m 3 -i -e fatal -e error -e warning -e 'timed out' "$BT/source.out" | oneline 300)
	[ $rc = 0 ] && [ -z "$SRC_ERR" ] && return 0
	[ -n "$SRC_ERR" ] || SRC_ERR="smtp-source exit $rc"
	return 1
}

# ---------------------------------------------------------------- box
nf_up() {	# [WORKERS [FASTTO]]: -W, the daemon's "workers" (default $MXB_W); -T
	tb_exec box bash "$NF" up -b br0 -q "$Q" -W "${1:-$MXB_W}" -i "$INPORT" -o "$OUTPORT" -F open \
		${2:+-T "$2"} >"$BT/nf.log" 2>&1
}
nf_down() { tb_exec box bash "$NF" down >>"$BT/nf.log" 2>&1; }
nf_backend() {
	tb_exec box bash "$NF" status 2>/dev/null |
		sed -n '1s/.*: \([a-z]*\) back end.*/\1/p'
}
# packets that hit the interception rules so far: "NFQUEUE TPROXY-IN TPROXY-OUT"
# (iptables back end; the nft back end's rules have no counters: "- - -")
nf_counts() {
	if [ "$(nf_backend)" != iptables ]; then echo "- - -"; return; fi
	tb_exec box iptables -w -t mangle -vnxL MXBRIDGE 2>/dev/null | awk -v i=":$INPORT " -v o=":$OUTPORT " '
		/NFQUEUE/ { q += $1 }
		/TPROXY/ && index($0 " ", i) { ti += $1 }
		/TPROXY/ && index($0 " ", o) { to += $1 }
		END { print q + 0, ti + 0, to + 0 }'
}
# ---------------------------------------------------------------- daemon
MXB_CTL=$BT/mxb.sock
mxb_conf() {	# MODE [WORKERS]: relay | pass | incoming, +rspamd or +metrics; workers (default $MXB_W)
	local f=$BT/mxb-$1.conf mode=${1%%+*}
	rm -rf "$BT/spool"
	mxb_statedir "$BT"
	{
		echo "hostname gw.bench.example"
		echo "spool \"$BT/spool\""
		echo "pidfile \"$BT/mxbridge.pid\""
		echo "control \"$MXB_CTL\""
		echo "queue-number $Q"
		echo "workers ${2:-$MXB_W}"
		echo "classifier $BENCH_CLASSIFIER"
		echo "listen incoming port $INPORT"
		echo "listen outgoing port $OUTPORT"
		case $mode in
		relay)
			echo "default incoming proxy"
			echo "default outgoing proxy"
			echo "client-server default honour"
			echo "domain \"example.com\" { server $TB_SRV_IP4; }" ;;
		pass)
			echo "default incoming pass"
			echo "default outgoing pass"
			echo "domain \"example.com\" { server $TB_SRV_IP4; }" ;;
		incoming)
			echo "default incoming proxy"
			echo "default outgoing proxy"
			echo "domain \"example.com\" {"
			echo "	server $PROT_IP port 25"
			echo "	deliver-via-server yes"
			echo "}"
			echo "queue { fsync yes; }" ;;
		esac
		echo "shutdown-grace 3s"
		# sessions: "auto" derives the cap from the open-file limit
		# (7,500 at nofile 20,000), below the concurrency row's
		# IDLE_SESSIONS: name it, one socket per idle incoming session
		echo "limits { connections-per-client 0; sessions $((IDLE + 500)); }"
		echo "match client $TB_PREFIX4 relay"
		case $1 in
		*+rspamd)
			echo "milter rspamd { socket inet:$RS_ADDR:$RS_PORT; content-timeout 30s }"
			echo "milters incoming rspamd"
			echo "milters outgoing rspamd" ;;
		*+metrics)
			echo "metrics listen 127.0.0.1 $MET_PORT" ;;
		esac
	} >"$f"
	echo "$f"
}
MXB_WHY=
daemon_start() {	# MODE [WORKERS]: every worker's queue open
	local conf q w=${2:-$MXB_W}
	MXB_WHY=
	if [ ! -x "$BIN/mxbridge" ]; then MXB_WHY="no $BIN/mxbridge"; return 1; fi
	conf=$(mxb_conf "$1" "$w")
	if ! tb_exec box "$BIN/mxbridge" -n -f "$conf" >"$BT/conf-check.out" 2>&1; then
		MXB_WHY="config refused: $(oneline 200 <"$BT/conf-check.out")"
		return 1
	fi
	: >"$TB_MXB_LOG"
	if ! mxb_start "$conf" 2>"$BT/mxb-start.err"; then
		MXB_WHY="daemon did not start: $(grep -v -e ' listener dir=.* transparent=yes' \
			"$TB_MXB_LOG" | tail -n 2 | oneline 200)"
		tb_exec box ss -tanp >>"$BT/ss-at-failure.txt" 2>&1
		return 1
	fi
	for q in $(seq "$Q" $((Q + w - 1))); do
		wait_for -t 5 grep -q "nfq: queue=$q open" "$TB_MXB_LOG" && continue
		MXB_WHY="queue $q not open: $(tail -n 3 "$TB_MXB_LOG" | oneline 200)"
		mxb_stop >/dev/null 2>&1
		return 1
	done
	# measured with its kernel table in place, not the queue before it
	if [ "$BENCH_CLASSIFIER" = kernel ] &&
	    ! wait_for -t 5 grep -q "kernel classifier loaded" "$TB_MXB_LOG"; then
		MXB_WHY="kernel classifier not loaded: $(grep nfq: "$TB_MXB_LOG" | tail -n 2 | oneline 200)"
		mxb_stop >/dev/null 2>&1
		return 1
	fi
	MXB_PID=$(tr -dc 0-9 <"$TB_MXB_PIDFILE")
	return 0
}
# stop the daemon; a sanitizer report or a hang on SIGTERM becomes a note
# (and fails the run: see the end)
DAEMON_TROUBLE=''
daemon_stop() {
	local t
	mxb_stop >/dev/null 2>&1 || {
		note_add "mxbridge did not stop within 5 s of SIGTERM (killed)"
		DAEMON_TROUBLE=1; }
	t=$(grep -m 2 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TB_MXB_LOG" 2>/dev/null | oneline 300)
	if [ -n "$t" ]; then
		note_add "sanitizer report in the daemon log: $t"
		cp "$TB_MXB_LOG" "$BT/mxbridge-sanitizer.log" 2>/dev/null
		DAEMON_TROUBLE=1
	fi
}
# one counter of "mxbridgectl stats" (0 if absent)
stat_of() {
	local v
	v=$(echo "$1" | sed -n "s/^$2=//p" | head -n 1)
	echo "${v:-0}"
}
mxb_stats() { tb_exec box "$BIN/mxbridgectl" -s "$MXB_CTL" stats 2>/dev/null; }
mxb_status() { tb_exec box "$BIN/mxbridgectl" -s "$MXB_CTL" status 2>/dev/null; }
mxb_logtail() {
	tail -n "${1:-3}" "$TB_MXB_LOG" 2>/dev/null |
		sed 's/^[0-9]\{4\}-[0-9-]*T[0-9:.]* //' | oneline 300
}

# ---------------------------------------------------------------- rows
# row_na ID NAME PEER REASON
# (M_KIND: the record kind, "run" or "srun" for the scaling rows; M_EXTRA:
# more key=value fields of the record)
M_KIND=run M_EXTRA=()
row_na() {
	say "row $1 ($2): n/a ($4)"
	add "kind=$M_KIND" "id=$1" "round=$ROUND" "name=$2" "peer=$3" status=n/a "reason=$4" "${M_EXTRA[@]}"
}

# measure ID NAME PEER DST RCPT SINK CPU_PID QUEUED [VERIFY_FN]
# runs the warm-up and the measured load, checks that every message reached
# the sink, records the row.  VERIFY_FN BEFORE AFTER (optional) checks that
# the traffic took the intended path; it prints a reason when it did not.
measure() {
	local id=$1 name=$2 peer=$3 dst=$4 rcpt=$5 sink=$6 pid=$7 queued=$8 vfy=${9:-}
	local base t_done got cpu0 cpu1 v0 v1 why msg_s del_s='' del_secs=''
	say "row $id: $name"
	# warm-up: ARP, caches, first sessions (not measured)
	base=$(bsink "$sink")
	if ! source_run "$dst" "$rcpt" "$WARM"; then
		row_na "$id" "$name" "$peer" "warm-up failed: $SRC_ERR${pid:+; $(what_log "$id")}"
		return 1
	fi
	if ! bsink_wait "$sink" $((base + WARM)) 30 >/dev/null; then
		row_na "$id" "$name" "$peer" "warm-up: only $(( $(bsink "$sink") - base )) of $WARM messages reached the sink${pid:+; $(what_log "$id")}"
		return 1
	fi
	base=$(bsink "$sink")
	cpu0=-; [ -n "$pid" ] && cpu0=$(cpu "$pid")
	local idle0; idle0=$(idle_ticks)
	rm -f "$BT/vfy.extra"
	[ -n "$vfy" ] && v0=$($vfy snap)
	local perf=''
	[ -z "${BENCH_NSTAT:-}" ] || { tb_exec box nstat -n; ctxsw "$pid" >"$BT/ctxsw-row$id-r$ROUND.txt"; }
	if [ -n "${BENCH_PERF:-}" ]; then
		perf record -a -e cpu-clock -g -o "$BT/perf-row$id-r$ROUND.data" >/dev/null 2>&1 &
		perf=$!
	fi
	source_run "$dst" "$rcpt" "$MSGS"
	local src_rc=$?
	[ -z "$perf" ] || { kill -INT "$perf"; wait "$perf"; }
	[ -z "${BENCH_NSTAT:-}" ] || { tb_exec box nstat >"$BT/nstat-row$id-r$ROUND.txt"; ctxsw "$pid" >>"$BT/ctxsw-row$id-r$ROUND.txt"; }
	if [ $src_rc != 0 ]; then
		row_na "$id" "$name" "$peer" "$SRC_ERR${pid:+; $(what_log "$id")}"
		return 1
	fi
	msg_s=$(rate "$MSGS" "$SRC_NS")
	local idle; idle=$(awk -v a="$idle0" -v b="$(idle_ticks)" -v t="$SRC_NS" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
		'BEGIN { printf "%.0f", 100 * (b - a) / hz / (t / 1e9) / n }')
	if [ "$queued" = 1 ]; then
		if ! t_done=$(bsink_wait "$sink" $((base + MSGS)) "$DELIVER_TMO"); then
			got=$(( $(bsink "$sink") - base ))
			row_na "$id" "$name" "$peer" "accepted $msg_s msg/s, but only $got of $MSGS delivered within ${DELIVER_TMO} s${pid:+; $(what_log "$id")}"
			return 1
		fi
		del_s=$(rate "$MSGS" $((t_done - SRC_T0)))
		del_secs=$(secs $((t_done - SRC_T0)))
	else
		got=$(( $(bsink "$sink") - base ))
		if [ "$got" -ne "$MSGS" ]; then
			row_na "$id" "$name" "$peer" "smtp-source done, but $got of $MSGS messages reached the sink"
			return 1
		fi
	fi
	cpu1=-; [ -n "$pid" ] && cpu1=$(cpu "$pid")
	VERIFIED=
	if [ -n "$vfy" ]; then
		v1=$($vfy snap)
		why=$($vfy check "$v0" "$v1")
		case $why in
		"ok "*) VERIFIED=${why#ok } ;;
		*)	row_na "$id" "$name" "$peer" "traffic did not take this path: $why"
			return 1 ;;
		esac
	fi
	local -a vx=()
	[ -f "$BT/vfy.extra" ] && mapfile -t vx <"$BT/vfy.extra"
	say "row $id: $msg_s msg/s${del_s:+, delivered $del_s msg/s}, cpu $(cpu_delta "$cpu0" "$cpu1" | sed 's/^$/-/') s, machine idle $idle %"
	add "kind=$M_KIND" "id=$id" "round=$ROUND" "name=$name" "peer=$peer" status=ok "messages=$MSGS" \
		"seconds=$(secs "$SRC_NS")" "msg_s=$msg_s" ${del_s:+"delivered_s=$del_s"} \
		${del_secs:+"delivered_seconds=$del_secs"} "cpu_s=$(cpu_delta "$cpu0" "$cpu1")" \
		"verified=$VERIFIED" "load1=$(cut -d' ' -f1 /proc/loadavg)" "idle_pct=$idle" \
		"${M_EXTRA[@]}" "${vx[@]}"
	return 0
}
# what the process of row ID logged last, for the n/a reasons
what_log() {
	case $1 in
	2|s2*) echo "haproxy: $(tail -n 2 "$BT/haproxy.log" 2>/dev/null | oneline 200)" ;;
	5|7) echo "postfix: $(grep -E 'warning|fatal|error|status=(deferred|bounced)' "$PF_DIR/maillog" 2>/dev/null | tail -n 2 | oneline 200)" ;;
	*) echo "daemon log: $(mxb_logtail 3)" ;;
	esac
}

# --- path checks: "snap" prints a state; "check OLD NEW" prints
# "ok WHAT WAS SEEN" or the reason why the traffic did not take the path
vfy_haproxy() {	# TPROXY to OUTPORT >= MSGS, nothing queued
	case $1 in
	snap) nf_counts ;;
	check)
		set -- $2 $3
		if [ "$1" = - ]; then echo "ok (no rule counters with the nft back end)"
		elif [ $(($4 - $1)) -ne 0 ]; then echo "$(($4 - $1)) packets were queued"
		elif [ $(($6 - $3)) -lt "$MSGS" ]; then
			echo "only $(($6 - $3)) packets went to the outgoing listener"
		else echo "ok TPROXY to :$OUTPORT $(($6 - $3)) packets, queued 0"
		fi ;;
	esac
}
# mxbridge: the classifier's decisions and the listener's sessions, the
# number of workers the daemon runs and (with more than one) that more than
# one of them took connections.  A snapshot: "NFQ ACCEPTED WORKERS W0 W1 ..",
# the last being worker.I.proxy_accepted_DIR ("-" where stats has none).
# The per-worker deltas also go to $BT/vfy.extra (worker_accepted=...).
vfy_mxb() {	# snap | check OLD NEW, with VFY_DIR VFY_ACT VFY_W set
	local s n i v o
	case $1 in
	snap)
		s=$(mxb_stats; mxb_status)
		n=$(stat_of "$s" workers)
		o="$(stat_of "$s" "nfq_${VFY_DIR}_${VFY_ACT}") $(stat_of "$s" "proxy_accepted_$VFY_DIR") $n"
		for ((i = 0; i < n; i++)); do
			v=$(echo "$s" | sed -n "s/^worker\.$i\.proxy_accepted_$VFY_DIR=//p" | head -n 1)
			o="$o ${v:--}"
		done
		echo "$o" ;;
	check)
		local -a a b
		local dq da w want=${VFY_W:-1} pw='' busy=0 miss=0
		read -r -a a <<<"$2"
		read -r -a b <<<"$3"
		dq=$((b[0] - a[0])) da=$((b[1] - a[1])) w=${b[2]}
		if [ $dq -lt "$MSGS" ]; then
			echo "classifier: nfq_${VFY_DIR}_${VFY_ACT} +$dq for $MSGS messages"; return
		elif [ "$VFY_ACT" = proxy ] && [ $da -lt "$MSGS" ]; then
			echo "listener: proxy_accepted_$VFY_DIR +$da for $MSGS messages"; return
		elif [ "$VFY_ACT" != proxy ] && [ $da -ne 0 ]; then
			echo "listener: proxy_accepted_$VFY_DIR +$da in pass mode"; return
		fi
		# a daemon from before "workers" reports none: one loop
		if [ "$w" = 0 ] && [ "$want" != 1 ]; then
			echo "mxbridgectl stats and status show no workers=, the config says $want"; return
		elif [ "$w" != "$want" ] && [ "$w" != 0 ]; then
			echo "the daemon runs workers=$w, the config says $want"; return
		fi
		for ((i = 0; i < w; i++)); do
			if [ "${b[3 + i]:--}" = - ]; then miss=1; continue; fi
			v=$((b[3 + i] - ${a[3 + i]:-0}))
			pw="$pw $v"
			[ $v -gt 0 ] && busy=$((busy + 1))
		done
		pw=${pw# }
		[ -z "$pw" ] || echo "worker_accepted=$pw" >"$BT/vfy.extra"
		if [ "$VFY_ACT" = proxy ] && [ "$want" -gt 1 ]; then
			if [ $miss = 1 ]; then
				echo "stats has no worker.I.proxy_accepted_$VFY_DIR for each of $w workers"; return
			elif [ $busy -lt 2 ]; then
				echo "one worker took every connection (worker.I.proxy_accepted_$VFY_DIR +: $pw)"; return
			fi
		fi
		echo "ok nfq_${VFY_DIR}_${VFY_ACT} +$dq, proxy_accepted_$VFY_DIR +$da${pw:+, per worker +${pw// / +}}" ;;
	esac
}

# ---------------------------------------------------------------- HAProxy
haproxy_start() {	# [NBTHREAD [CPUS]]: nbthread (default: HAProxy's), taskset -c CPUS
	cat >"$BT/haproxy.cfg" <<EOF
# layer-4 transparent relay: TPROXY'd connections on the outgoing listener
# port, forwarded to their original destination ("server 0.0.0.0" with no
# port: the address and port the client connected to)
global
    maxconn 8000${1:+
    nbthread $1}
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen smtp_transparent
    bind 0.0.0.0:$OUTPORT transparent
    server orig 0.0.0.0
EOF
	tb_exec box haproxy -c -q -f "$BT/haproxy.cfg" >"$BT/haproxy.log" 2>&1 || return 1
	# not through tb_exec: a backgrounded function would give a subshell's pid
	# shellcheck disable=SC2046
	ip netns exec "$TB_NAME-box" ${2:+taskset -c "$2"} haproxy -db -f "$BT/haproxy.cfg" \
		</dev/null >>"$BT/haproxy.log" 2>&1 &
	HAPROXY_PID=$!
	tbd_record_pid box bench-haproxy "$HAPROXY_PID"
	wait_for -t 5 tbd_listening_tcp box "0.0.0.0:$OUTPORT" "$OUTPORT"
}
haproxy_stop() {
	[ -n "$HAPROXY_PID" ] || return 0
	kill "$HAPROXY_PID" 2>/dev/null
	wait "$HAPROXY_PID" 2>/dev/null
	HAPROXY_PID=
}

# ---------------------------------------------------------------- Postfix
# a Postfix of its own in the box: explicit relay on 192.0.2.2:25,
# relayhost = the sink; queue and fsync behaviour as shipped
postfix_start() {
	PF_DIR=$BT/postfix
	mkdir -p "$PF_DIR/etc" "$PF_DIR/queue" "$PF_DIR/data"
	chown postfix: "$PF_DIR/data"
	cat >"$PF_DIR/etc/main.cf" <<EOF
# Postfix relay of the mxbridge bench (box node). Generated.
compatibility_level = 3.6
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.example
mydomain = bench.example
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = $TB_BOX_IP4
inet_protocols = ipv4
mynetworks = 127.0.0.0/8 $TB_PREFIX4
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [$SINK_IP]:25
# the testbed has no outside DNS: no lookups on either side
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
maillog_file = $PF_DIR/maillog
EOF
	sed -n '/^# service type/,$p' "$TB_STATE/srv/etc/master.cf" >"$PF_DIR/etc/master.cf"
	[ -s "$PF_DIR/etc/master.cf" ] || return 1
	tb_exec box postfix -c "$PF_DIR/etc" start >"$BT/postfix-start.log" 2>&1 || return 1
	wait_for -t 10 tbd_listening_tcp box "$TB_BOX_IP4:25" 25 || return 1
	PF_PID=$(tr -dc 0-9 <"$PF_DIR/queue/pid/master.pid" 2>/dev/null)
	[ -n "$PF_PID" ] || return 1
	tbd_record_pid box bench-postfix "$PF_PID"
}
postfix_stop() {
	[ -n "$PF_DIR" ] && tb_exec box postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1
	return 0
}

# ================================================================ run
N1="direct: bridge only, no interception"
HAV=$(haproxy -v 2>/dev/null | sed -n '1s/^HAProxy version \([0-9.]*\).*/\1/p')
N2="HAProxy $HAV TPROXY layer-4 relay"
N3="mxbridge outgoing proxy, live relay"
N4="mxbridge pass (classified, forwarded as is)"
N5="Postfix $(postconf -d -h mail_version 2>/dev/null) store-and-forward relay"
N6="mxbridge incoming proxy, queue (fsync), deliver"
N7="Postfix store-and-forward relay, rspamd milter"
N8="mxbridge incoming proxy, queue, rspamd milter"
N9="mxbridge live relay, rspamd milter"
N10="mxbridge live relay, metrics scraped 1/s"
N11="mxbridge incoming proxy, metrics scraped 1/s"

LAT_DIRECT='' LAT_RELAY='' LAT_IN=''
latency() {	# DST RCPT -> JSON on stdout
	tb_exec c1 timeout 300 python3 "$BPY" latency "$1" 25 "$LAT_N" --size "$BYTES" --rcpt "$2"
}
# jreason TEXT: {"reason": TEXT} as JSON
jreason() { python3 -c 'import json,sys; print(json.dumps({"reason": sys.argv[1]}))' "$1"; }
# the reason of a failed latency run, from its JSON output
lat_reason() {
	python3 -c 'import json,sys
d = json.loads(sys.argv[1])
print(json.dumps({"reason": "%d transactions failed: %s" % (d["errors"], d["first_error"])}))' "$1" 2>/dev/null ||
		jreason "latency client failed: $(echo "$1" | oneline 200)"
}

# --- what the rows need
NF_OK=0 NF_WHY='' NF_IS=down
if [ ! -f "$NF" ]; then
	NF_WHY="no scripts/mxbridge-netfilter"
elif nf_up; then
	NF_OK=1
	nf_down
else
	NF_WHY="mxbridge-netfilter up failed: $(tail -n 2 "$BT/nf.log" | oneline 200)"
	nf_down
fi
# nf_state up [WORKERS]|upany|down: the interception rules as a row needs
# them: up with -W WORKERS (default $MXB_W), up with any -W (HAProxy's
# flows are marked ahead of the queue), or down.  NF_IS: down or up:W
nf_state() {
	local want=$1
	case $1 in
	upany) case $NF_IS in up:*) return 0 ;; esac; want=up:$MXB_W ;;
	up) want=up:${2:-$MXB_W} ;;
	esac
	[ "$NF_IS" = "$want" ] && return 0
	if [ "$want" != down ]; then
		# a new -W: the rules go down first (up refuses to stack)
		[ "$NF_IS" = down ] || nf_down ||
			{ NF_WHY="mxbridge-netfilter down failed: $(tail -n 2 "$BT/nf.log" | oneline 200)"; return 1; }
		NF_IS=down
		nf_up "${want#up:}" || { NF_WHY="mxbridge-netfilter up -W ${want#up:} failed: $(tail -n 2 "$BT/nf.log" | oneline 200)"; return 1; }
	else
		nf_down || { NF_WHY="mxbridge-netfilter down failed: $(tail -n 2 "$BT/nf.log" | oneline 200)"; return 1; }
	fi
	NF_IS=$want
}
PF_OK=0 PF_WHY=
if postfix_start; then PF_OK=1
else PF_WHY="postfix did not start: $(tail -n 2 "$BT/postfix-start.log" | oneline 200)"; fi
# one rspamd for rows 7-9, without the milter debug log (one info line a
# message, which rs_scanned counts)
RS_OK=0 RS_WHY='' RS_PID=''
case " ${BENCH_ROWS:-7} " in
*" 7 "*|*" 8 "*|*" 9 "*)
	if ENG_RSPAMD_DEBUG='' eng_rspamd box "$RS_ADDR" "$RS_PORT"; then
		RS_OK=1 RS_PID=$ENG_RSPAMD_PID
	else
		RS_WHY="rspamd: $ENG_WHY"
	fi ;;
esac
# pf_milter on|off: rspamd as the Postfix relay's smtpd_milters (row 7)
pf_milter() {
	if [ "$1" = on ]; then
		tb_exec box postconf -c "$PF_DIR/etc" -e "smtpd_milters = inet:$RS_ADDR:$RS_PORT" \
			"milter_default_action = tempfail"
	else
		tb_exec box postconf -c "$PF_DIR/etc" -X smtpd_milters milter_default_action
	fi && tb_exec box postfix -c "$PF_DIR/etc" reload >>"$BT/postfix-start.log" 2>&1
}
# messages rspamd has scanned so far (its one info line per task)
rs_scanned() { grep -c rspamd_task_write_log "$ENG_RSPAMD_LOG" 2>/dev/null || echo 0; }
# vfy_rs: rows 7-9's check: the row's own (VFY_INNER, if any), then that
# rspamd scanned every message; its CPU goes to $BT/vfy.extra
# (milter_cpu_s=).  A snapshot: "SCANNED CPU|INNER SNAPSHOT"
vfy_rs() {
	case $1 in
	snap) echo "$(rs_scanned) $(cpu "$RS_PID")|$([ -z "${VFY_INNER:-}" ] || "$VFY_INNER" snap)" ;;
	check)
		local r='' n
		if [ -n "${VFY_INNER:-}" ]; then
			r=$("$VFY_INNER" check "${2#*|}" "${3#*|}")
			case $r in "ok "*) r=", ${r#ok }" ;; *) echo "$r"; return ;; esac
		fi
		# shellcheck disable=SC2086  # two numbers each
		set -- ${2%%|*} ${3%%|*}
		n=$(($3 - $1))
		if [ $n -lt "$MSGS" ]; then
			echo "rspamd scanned $n of $MSGS messages"; return
		fi
		echo "milter_cpu_s=$(cpu_delta "$2" "$4")" >>"$BT/vfy.extra"
		echo "ok rspamd scanned +$n$r" ;;
	esac
}

# --- one run of each row; a row that fails is not run again
row1() { nf_state down || { row_na 1 "$N1" "" "$NF_WHY"; return 1; }
	measure 1 "$N1" "" "$SINK_IP" "$RCPT_OUT" out "" 0; }
row2() {
	[ $NF_OK = 1 ] && nf_state upany || { row_na 2 "$N2" "" "$NF_WHY"; return 1; }
	haproxy_start || {
		row_na 2 "$N2" "" "haproxy did not start: $(tail -n 2 "$BT/haproxy.log" | oneline 200)"
		haproxy_stop; return 1; }
	mxb_premark add 0x20000 || { row_na 2 "$N2" "" "could not add the premark rule"; haproxy_stop; return 1; }
	measure 2 "$N2" "" "$SINK_IP" "$RCPT_OUT" out "$HAPROXY_PID" 0 vfy_haproxy
	local rc=$?
	mxb_premark del 0x20000 || { note_add "could not remove the premark rule"; NF_OK=0; NF_WHY="premark rule stuck"; }
	haproxy_stop
	return $rc
}
row_mxb() {	# ID NAME PEER MODE DIR ACT DST RCPT SINK QUEUED [VERIFY_FN]
	[ $NF_OK = 1 ] && nf_state up || { row_na "$1" "$2" "$3" "$NF_WHY"; return 1; }
	daemon_start "$4" || { row_na "$1" "$2" "$3" "$MXB_WHY"; return 1; }
	VFY_DIR=$5 VFY_ACT=$6 VFY_W=$MXB_W
	measure "$1" "$2" "$3" "$7" "$8" "$9" "$MXB_PID" "${10}" "${11:-vfy_mxb}"
	local rc=$?
	daemon_stop
	return $rc
}
row3() { row_mxb 3 "$N3" 2 relay outgoing proxy "$SINK_IP" "$RCPT_OUT" out 0; }
row4() { row_mxb 4 "$N4" 1 pass outgoing pass "$SINK_IP" "$RCPT_OUT" out 0; }
row5() {
	[ $PF_OK = 1 ] || { row_na 5 "$N5" "" "$PF_WHY"; return 1; }
	# an explicit relay: no interception (the classifier would take it)
	nf_state down || { row_na 5 "$N5" "" "$NF_WHY"; return 1; }
	measure 5 "$N5" "" "$TB_BOX_IP4" "$RCPT_OUT" out "$PF_PID" 1
}
row6() { row_mxb 6 "$N6" 5 incoming incoming proxy "$PROT_IP" "$RCPT_IN" prot 1; }
# rows 10 and 11: the scraper runs from before the warm-up to the end
SCRAPE_PID=''
scrape_start() {
	rm -f "$BT/scrapes"
	ip netns exec "$(tb_ns box)" python3 "$BPY" scrape 127.0.0.1 "$MET_PORT" 1 "$BT/scrapes" \
		</dev/null >"$BT/scrape.log" 2>&1 &
	SCRAPE_PID=$!
	tbd_record_pid box bench-scrape "$SCRAPE_PID"
	wait_for -t 5 test -s "$BT/scrapes"
}
scrape_stop() {
	[ -n "$SCRAPE_PID" ] || return 0
	kill "$SCRAPE_PID" 2>/dev/null
	wait "$SCRAPE_PID" 2>/dev/null
	SCRAPE_PID=''
}
# vfy_scrape: the row's own check (vfy_mxb), then one scrape answered
# for every second of the load.  A snapshot: "SCRAPES NS|INNER"
vfy_scrape() {
	case $1 in
	snap) echo "$(cat "$BT/scrapes" 2>/dev/null || echo 0) $(now_ns)|$(vfy_mxb snap)" ;;
	check)
		local r n want
		r=$(vfy_mxb check "${2#*|}" "${3#*|}")
		case $r in "ok "*) ;; *) echo "$r"; return ;; esac
		# shellcheck disable=SC2086  # two numbers each
		set -- ${2%%|*} ${3%%|*}
		n=$(($3 - $1)) want=$(( ($4 - $2) / 1000000000 - 1 ))
		if [ "$3" -lt 1 ] || [ $n -lt $want ]; then
			echo "metrics scraped $n times in $(( ($4 - $2) / 1000000 )) ms (at least $want wanted)"; return
		fi
		echo "scrapes=$n" >>"$BT/vfy.extra"
		echo "ok metrics scraped +$n, ${r#ok }" ;;
	esac
}
row_scraped() {	# ID NAME PEER MODE DIR DST RCPT SINK QUEUED
	local rc
	[ $NF_OK = 1 ] && nf_state up || { row_na "$1" "$2" "$3" "$NF_WHY"; return 1; }
	daemon_start "$4" || { row_na "$1" "$2" "$3" "$MXB_WHY"; return 1; }
	if ! scrape_start; then
		row_na "$1" "$2" "$3" "no metrics answer on 127.0.0.1:$MET_PORT: $(tail -n 2 "$BT/scrape.log" | oneline 200)"
		scrape_stop; daemon_stop; return 1
	fi
	VFY_DIR=$5 VFY_ACT=proxy VFY_W=$MXB_W
	measure "$1" "$2" "$3" "$6" "$7" "$8" "$MXB_PID" "$9" vfy_scrape
	rc=$?
	scrape_stop
	daemon_stop
	return $rc
}
row10() { row_scraped 10 "$N10" 3 relay+metrics outgoing "$SINK_IP" "$RCPT_OUT" out 0; }
row11() { row_scraped 11 "$N11" 6 incoming+metrics incoming "$PROT_IP" "$RCPT_IN" prot 1; }
row7() {
	[ $PF_OK = 1 ] || { row_na 7 "$N7" "" "$PF_WHY"; return 1; }
	[ $RS_OK = 1 ] || { row_na 7 "$N7" "" "$RS_WHY"; return 1; }
	nf_state down || { row_na 7 "$N7" "" "$NF_WHY"; return 1; }
	pf_milter on || { row_na 7 "$N7" "" "postconf/postfix reload failed"; return 1; }
	VFY_INNER='' measure 7 "$N7" "" "$TB_BOX_IP4" "$RCPT_OUT" out "$PF_PID" 1 vfy_rs
	local rc=$?
	pf_milter off || { note_add "could not take rspamd out of Postfix"; PF_OK=0; PF_WHY="smtpd_milters stuck"; }
	return $rc
}
row8() {
	[ $RS_OK = 1 ] || { row_na 8 "$N8" 7 "$RS_WHY"; return 1; }
	VFY_INNER=vfy_mxb row_mxb 8 "$N8" 7 incoming+rspamd incoming proxy "$PROT_IP" "$RCPT_IN" prot 1 vfy_rs
}
row9() {
	[ $RS_OK = 1 ] || { row_na 9 "$N9" 3 "$RS_WHY"; return 1; }
	VFY_INNER=vfy_mxb row_mxb 9 "$N9" 3 relay+rspamd outgoing proxy "$SINK_IP" "$RCPT_OUT" out 0 vfy_rs
}

# --- the scaling rows: W threads of HAProxy, of the live relay and of the
# incoming proxy.  scale_cores W sets SC_PROXY and SC_LOAD (CPU lists for
# taskset, empty when everything shares every core) and SC_CORES (how the
# cores were shared, in words).  BENCH_PIN=no never pins, BENCH_PIN=yes
# pins whenever a core is left for the load (nproc > W)
ALL_CPUS=$(python3 "$BPY" cpus 0 | cut -d' ' -f2)
scale_cores() {
	local l pin=0
	l=$(python3 "$BPY" cpus "$1")
	case ${BENCH_PIN:-auto} in
	no) ;;
	yes) [ "$NPROC" -gt "$1" ] && pin=1 ;;
	*) [ "$NPROC" -ge $((2 * $1 + 2)) ] && pin=1 ;;
	esac
	if [ $pin = 1 ] && [ "${l% *}" != - ] && [ "${l#* }" != - ]; then
		SC_PROXY=${l% *} SC_LOAD=${l#* }
		SC_CORES="proxy cores $SC_PROXY, load $SC_LOAD"
	else
		SC_PROXY='' SC_LOAD=''
		SC_CORES="shared: $NPROC cores for everything"
	fi
}
# scale_pin: smtp-source and the sinks on SC_LOAD (or every core again)
scale_pin() {
	local p cpus=${SC_LOAD:-$ALL_CPUS}
	SRC_PIN=${SC_LOAD:+taskset -c $SC_LOAD}
	for p in $SINK_PIDS; do taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1; done
}
scale_unpin() { SC_LOAD=''; scale_pin; }
scale_rec() {	# PATH W: the scaling record's own fields
	M_KIND=srun M_EXTRA=("path=$1" "workers=$2" "cores=$SC_CORES" "proxy_cpus=$SC_PROXY" "load_cpus=$SC_LOAD")
}
scale_s2() {	# W: HAProxy nbthread W, as row 2
	local w=$1 id=s2w$1 name rc
	name="HAProxy $HAV TPROXY layer-4, nbthread $1"
	scale_rec haproxy "$w"
	[ $NF_OK = 1 ] && nf_state upany || { row_na "$id" "$name" "" "$NF_WHY"; return 1; }
	haproxy_start "$w" "$SC_PROXY" || {
		row_na "$id" "$name" "" "haproxy did not start: $(tail -n 2 "$BT/haproxy.log" | oneline 200)"
		haproxy_stop; return 1; }
	mxb_premark add 0x20000 || { row_na "$id" "$name" "" "could not add the premark rule"; haproxy_stop; return 1; }
	measure "$id" "$name" "" "$SINK_IP" "$RCPT_OUT" out "$HAPROXY_PID" 0 vfy_haproxy
	rc=$?
	mxb_premark del 0x20000 || { note_add "could not remove the premark rule"; NF_OK=0; NF_WHY="premark rule stuck"; }
	haproxy_stop
	return $rc
}
scale_mxb() {	# W TOKEN PATH NAME MODE DIR DST RCPT SINK QUEUED
	local w=$1 id=$2w$1 rc
	scale_rec "$3" "$w"
	[ $NF_OK = 1 ] && nf_state up "$w" || { row_na "$id" "$4" "" "$NF_WHY"; return 1; }
	daemon_start "$5" "$w" || { row_na "$id" "$4" "" "$MXB_WHY"; return 1; }
	if [ -n "$SC_PROXY" ] && ! taskset -a -p -c "$SC_PROXY" "$MXB_PID" >/dev/null 2>&1; then
		row_na "$id" "$4" "" "taskset -a -p -c $SC_PROXY $MXB_PID failed"
		daemon_stop; return 1
	fi
	VFY_DIR=$6 VFY_ACT=proxy VFY_W=$w
	measure "$id" "$4" "" "$7" "$8" "$9" "$MXB_PID" "${10}" vfy_mxb
	rc=$?
	daemon_stop
	return $rc
}
scale_s3() { scale_mxb "$1" s3 relay "mxbridge live relay, workers $1" relay outgoing "$SINK_IP" "$RCPT_OUT" out 0; }
scale_s6() { scale_mxb "$1" s6 incoming "mxbridge incoming, queue (fsync), workers $1" incoming incoming "$PROT_IP" "$RCPT_IN" prot 1; }
# scale_sel TOKEN: is the scaling row TOKEN (s2, s3, s6) wanted?
scale_sel() {
	[ -z "${BENCH_ROWS:-}" ] && return 0
	case " $BENCH_ROWS " in *" scale "*|*" $1 "*) return 0 ;; esac
	return 1
}

# each mxbridge row right after its peer, ROUNDS times; the report keeps
# the best run of each row (other work on the machine only slows a run);
# then the scaling rows, at each W HAProxy first
FAILED=" "
for ROUND in $(seq "$ROUNDS"); do
	[ "$ROUNDS" -gt 1 ] && say "round $ROUND of $ROUNDS"
	for id in 1 4 2 3 9 10 5 6 11 7 8; do
		case $FAILED in *" $id "*) continue ;; esac
		case " ${BENCH_ROWS:-$id} " in *" $id "*) ;; *) continue ;; esac
		"row$id" || FAILED="$FAILED$id "
	done
	for w in $SCALE_W; do
		scale_cores "$w"
		for t in s2 s3 s6; do
			scale_sel $t || continue
			case $FAILED in *" ${t}w$w "*) continue ;; esac
			scale_pin
			"scale_$t" "$w" || FAILED="$FAILED${t}w$w "
		done
	done
	scale_unpin
	M_KIND=run M_EXTRA=()
done
postfix_stop
# want_section NAME: the sections after the rows run in a whole run, or
# where BENCH_ROWS names them (latency, concurrency, passflows, connrate)
want_section() {
	[ -z "${BENCH_ROWS:-}" ] && return 0
	case " $BENCH_ROWS " in *" $1 "*) return 0 ;; esac
	return 1
}
if [ -n "${BENCH_ROWS:-}" ] && ! want_section latency && ! want_section concurrency &&
	! want_section passflows && ! want_section connrate; then
	python3 "$BPY" report "$RES" --json "$OUT"
	exit 1
fi

# --- added latency per message: direct, live relay, incoming proxy
if want_section latency; then
LAT_DIRECT='' LAT_RELAY='' LAT_IN=''
say "latency: $LAT_N single-message transactions per path"
if nf_state down; then
	if out=$(latency "$SINK_IP" "$RCPT_OUT"); then LAT_DIRECT=$out
	else LAT_DIRECT=$(lat_reason "$out"); fi
else
	LAT_DIRECT=$(jreason "$NF_WHY")
fi
lat_mxb() {	# MODE DST RCPT: sets LAT_OUT
	local out
	if ! { [ $NF_OK = 1 ] && nf_state up; }; then LAT_OUT=$(jreason "$NF_WHY"); return; fi
	if ! daemon_start "$1"; then LAT_OUT=$(jreason "$MXB_WHY"); return; fi
	if out=$(latency "$2" "$3"); then LAT_OUT=$out
	else LAT_OUT=$(lat_reason "$out"); fi
	daemon_stop
}
lat_mxb relay "$SINK_IP" "$RCPT_OUT"; LAT_RELAY=$LAT_OUT
lat_mxb incoming "$PROT_IP" "$RCPT_IN"; LAT_IN=$LAT_OUT
add kind=latency "count=$LAT_N" "direct:json=${LAT_DIRECT:-null}" \
	"relay:json=${LAT_RELAY:-null}" "incoming:json=${LAT_IN:-null}"
fi

# --- concurrency: idle sessions held by the incoming proxy, fresh daemon
if ! want_section concurrency; then
	:
elif [ $NF_OK = 1 ] && nf_state up && daemon_start incoming; then
	say "concurrency: $IDLE idle sessions"
	if out=$(tb_exec c1 timeout 300 python3 "$BPY" idle "$PROT_IP" 25 "$IDLE" --pid "$MXB_PID" \
		--parallel 200 --timeout 30 --hold 1); then
		add kind=concurrency status=ok "path=mxbridge incoming proxy" "result:json=$out"
	else
		add kind=concurrency status=n/a "reason=$(echo "$out" | oneline 300); daemon log: $(mxb_logtail 2)" \
			"result:json=$(echo "$out" | python3 -c 'import json,sys
try: print(json.dumps(json.load(sys.stdin)))
except Exception: print("null")')"
	fi
	daemon_stop
else
	add kind=concurrency status=n/a "reason=${MXB_WHY:-${NF_WHY:-}}"
fi
# --- passed flows: PASSN flows held open through pass mode, on the fast
# path (the daemon's flows4 set, or the script's pass4), fresh daemon and rules with a fast-path
# timeout of PASS_T s.  A line on each while they sit in the set, then
# (the set emptied by its timeout) a line on each again: those packets
# take the divert, are routed and put the flows back.
# Every line must be answered.  The set's memory per element is measured
# on a scratch set of the same type in a namespace of its own (the
# kernel's slab before and after 100,000 elements), not guessed.
PASS_IP=192.0.2.42 PASS_T=30	# longer than opening them all or a round takes on a loaded 2-core VM
pass_set_n() {	# elements in the box's fast-path sets now: the script's pass4, the daemon's flows4
	{ tb_exec box nft list set bridge mxbridge pass4 2>/dev/null
	  tb_exec box nft list set bridge mxbridge_classify flows4 2>/dev/null; } | grep -o ' expires ' | wc -l
}
pass_set_mem() {	# N: bytes per element of a scratch pass4-like set
	local ns=mxbcal$$ s0 s1
	ip netns add "$ns" || return 1
	printf 'table bridge t {\n set s {\n  type ipv4_addr . ipv4_addr . inet_service . inet_service\n  flags dynamic,timeout\n  timeout 120s\n  size 262144\n }\n}\n' |
		ip netns exec "$ns" nft -f - &&
	python3 -c 'import sys
n = int(sys.argv[1])
print("add element bridge t s {")
print(",\n".join("10.%d.%d.%d . 192.0.2.42 . %d . 25 timeout 120s" % (i >> 16, (i >> 8) & 255, i & 255, 1024 + i % 60000)
                 for i in range(n)))
print("}")' "$1" >"$BT/calib.nft" &&
	s0=$(awk '/^Slab:/ { print $2 }' /proc/meminfo) &&
	ip netns exec "$ns" nft -f "$BT/calib.nft" && sleep 1 &&
	s1=$(awk '/^Slab:/ { print $2 }' /proc/meminfo) &&
	echo $(( (s1 - s0) * 1024 / $1 ))
	ip netns del "$ns"
}
passflows() {	# sets PF_OUT (JSON) or PF_WHY
	local st=$BT/passflows.status pid n_held n_r1 n_gone n_back t0 waited=0 out rc
	PF_OUT='' PF_WHY=''
	rm -f "$st" "$st.go1" "$st.go2"
	tb_exec out ip addr add "$PASS_IP/24" dev eth0 2>/dev/null
	tb_exec out python3 "$BPY" holdsrv "$PASS_IP" 25 >"$BT/holdsrv.out" 2>&1 &
	tbd_record_pid out bench-holdsrv $!
	SINK_PIDS="$SINK_PIDS $!"
	wait_for tbd_listening_tcp out "$PASS_IP:25" 25 || { PF_WHY="the holding server did not listen"; return 1; }
	tb_exec c1 timeout 900 python3 "$BPY" passflows "$PASS_IP" 25 "$PASSN" --status "$st" \
		--parallel 200 --timeout 30 >"$BT/passflows.out" 2>"$BT/passflows.err" &
	pid=$!
	wait_for -t 300 grep -q '^held' "$st" || { PF_WHY="not held: $(oneline 200 <"$BT/passflows.err")"; kill "$pid" 2>/dev/null; return 1; }
	n_held=$(pass_set_n)
	: >"$st.go1"
	wait_for -t 300 grep -q '^round1' "$st" || { PF_WHY="round 1 did not end"; kill "$pid" 2>/dev/null; return 1; }
	n_r1=$(pass_set_n)
	# idle until the set's timeout has emptied it (PASS_T, and the
	# kernel's garbage collection after it)
	t0=$SECONDS
	while [ "$(pass_set_n)" -gt 0 ] && [ $((SECONDS - t0)) -lt $((PASS_T * 6 + 30)) ]; do sleep 0.5; done
	n_gone=$(pass_set_n) waited=$((SECONDS - t0))
	: >"$st.go2"
	wait "$pid"; rc=$?
	n_back=$(pass_set_n)
	out=$(tail -n 1 "$BT/passflows.out")
	PF_OUT=$(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
d.update({"set_held": int(sys.argv[2]), "set_after_round1": int(sys.argv[3]),
          "set_after_idle": int(sys.argv[4]), "idle_s": int(sys.argv[5]),
          "set_after_round2": int(sys.argv[6]), "fast_timeout_s": int(sys.argv[7])})
print(json.dumps(d))' "$out" "$n_held" "$n_r1" "$n_gone" "$waited" "$n_back" "$PASS_T" 2>/dev/null) ||
		{ PF_WHY="client: $(oneline 200 <"$BT/passflows.err") $(echo "$out" | oneline 200)"; return 1; }
	[ "$rc" = 0 ] || { PF_WHY="flows broken: $(echo "$out" | oneline 300)"; return 1; }
	# both directions of every flow sat in the set, and left it idle
	[ "$n_held" -ge $((2 * PASSN)) ] && [ "$n_r1" -ge $((2 * PASSN)) ] && [ "$n_gone" = 0 ] &&
		[ "$n_back" -ge $((2 * PASSN)) ] ||
		{ PF_WHY="set: $n_held held, $n_r1 after round 1, $n_gone after ${waited}s idle, $n_back after round 2 (want >= $((2 * PASSN)), 0, >= $((2 * PASSN)))"; return 1; }
	return 0
}
if ! want_section passflows; then
	:
elif [ $NF_OK = 1 ] && nf_state down && nf_up "$MXB_W" "$PASS_T" && NF_IS=up:$MXB_W:T && daemon_start pass; then
	say "passed flows: $PASSN held open through pass mode (fast path timeout ${PASS_T}s)"
	if passflows; then
		# 100,000 elements: enough slab to stand out of the machine's
		# own movements; none measured if it did not
		mem=$(pass_set_mem 100000 2>>"$BT/calib.err") || mem=
		[ "${mem:-0}" -gt 0 ] 2>/dev/null || mem=
		add kind=passflows status=ok "result:json=$PF_OUT" "set_bytes_per_element=${mem:-null}" \
			"daemon_cpu_s=$(python3 "$BPY" cpu "$MXB_PID" 2>/dev/null || echo null)"
	else
		add kind=passflows status=n/a "reason=$PF_WHY" "result:json=${PF_OUT:-null}"
	fi
	daemon_stop
else
	add kind=passflows status=n/a "reason=${MXB_WHY:-${NF_WHY:-mxbridge-netfilter up -T $PASS_T failed: $(tail -n 2 "$BT/nf.log" | oneline 200)}}"
fi
nf_state down

# --- connection setup rate: test/bench-conn.sh on its own testbed
if ! want_section connrate; then
	:
elif [ -f "$TB_LIB_DIR/bench-conn.sh" ]; then
	say "connection setup rate: test/bench-conn.sh -n $CONN_N"
	: >"$BT/conn.json"
	if bash "$TB_LIB_DIR/bench-conn.sh" -n "$CONN_N" -o "$BT/conn.json" >"$BT/conn.out" 2>&1; then
		add kind=connrate status=ok "output=$(cat "$BT/conn.out")" \
			"result:json=$(tail -n 1 "$BT/conn.json" 2>/dev/null || echo null)"
	else
		add kind=connrate status=n/a "reason=test/bench-conn.sh: $(grep -E '^(FAIL|SKIP)' "$BT/conn.out" | tail -n 1 | oneline 300)"
	fi
else
	add kind=connrate status=n/a "reason=no test/bench-conn.sh"
fi

add kind=meta "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" "daemon_trouble=${DAEMON_TROUBLE:+yes}"
echo
python3 "$BPY" report "$RES" --json "$OUT" || fail "report failed"
[ -z "${BENCH_ROWS:-}" ] || exit 1	# a partial run
# exit 1 when any row or measurement is missing
python3 - "$OUT" <<'EOF' || exit 1
import json, sys
d = json.load(open(sys.argv[1]))
bad = [str(r["id"]) for r in d["rows"] + d.get("scale", {}).get("rows", [])
       if r.get("status") != "ok"]
for k in ("concurrency", "passflows", "connrate"):
    if d.get(k, {}).get("status") != "ok":
        bad.append(k)
if d.get("daemon_trouble"):
    bad.append("(daemon trouble: see the notes)")
if bad:
    print("bench: not measured: " + " ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
exit 0
