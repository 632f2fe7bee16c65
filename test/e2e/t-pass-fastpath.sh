#!/bin/bash
# t-pass-fastpath: passed flows cross the box on the bridge's fast path
# (the pass4/pass6 sets of mxbridge-netfilter), not through its host stack.
#   - a 5 MB flow over IPv4 and over IPv6 to a port classified pass: the
#     set holds it while it runs, the box's br0 (the divert into the host
#     stack) sees a small part of its bytes, every byte arrives;
#   - the flow idles past the set's timeout (-T 2): it leaves the set, its
#     next packet takes the divert, is routed by its connmark and puts it
#     back; the flow goes on;
#   - a proxied flow never enters the set (the same port, set to proxy);
#   - RST and port reuse: a passed flow reset while its entry is live,
#     then the port set to proxy and the same 4-tuple again: the new SYN
#     is classified again and reaches the proxy (not the server), and the
#     4-tuple is gone from the set;
#   - -T is checked, -T 0 leaves the fast path out;
#   - status counts the flows; down removes the sets with the table.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# classified through the queue (the queue's per-flow decision lines are read); t-classify-kernel
# runs the same decisions in the kernel
MXB_CLASSIFIER=queue
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup

BULK=5000000

nf_up() {
	tb_exec box bash "$MXB_NF" up -b br0 -q "$MXB_QUEUE" -W "$MXB_WORKERS" -i 10025 -o 10026 \
		-s 25,2525 -T "$1" >"$MXB_DIR/nf.log" 2>&1 ||
		fail "mxbridge-netfilter up -T $1: $(tail -n 3 "$MXB_DIR/nf.log")"
}
# in_set 4|6 KEY: the set pass4|pass6 holds KEY ("a . b . sport . dport")
in_set() { tb_exec box nft list set bridge mxbridge "pass$1" | grep -qF " $2 "; }
br0_rx() { tb_exec box cat /sys/class/net/br0/statistics/rx_bytes; }
mid_reached() { grep -q '^MID' "$1"; }

# bulk FAMILY CLIENT SERVER SPORT: the 5 MB flow with a pause past the
# set's timeout in the middle
bulk() {
	local f=$1 cip=$2 sip=$3 sp=$4 out=$TB_STATE/bulk$1.out fifo=$TB_STATE/go$1 pid
	local rx0 rx1 key="$2 . $3 . $4 . 2525"
	mkfifo "$fifo" || fail "mkfifo"
	rx0=$(br0_rx)
	ip netns exec "$(tb_ns c1)" python3 -c "$TB_BULK_CLIENT_PY" "$f" "$sip" 2525 "$sp" "$BULK" 0 \
		<"$fifo" >"$out" 2>&1 &
	pid=$!
	exec 9>"$fifo"
	wait_for -t 60 mid_reached "$out" || fail "IPv$f: first half not sent: $(cat "$out"; tail -5 "$TB_MXB_LOG")"
	in_set "$f" "$key" || fail "IPv$f: flow not in pass$f: $(tb_exec box nft list set bridge mxbridge "pass$f")"
	in_set "$f" "$3 . $2 . 2525 . $4" || fail "IPv$f: reply direction not in pass$f"
	tb_exec box bash "$MXB_NF" status | grep -q "^# fast path: IPv$f flows: [1-9]" ||
		fail "IPv$f: status does not count the flow: $(tb_exec box bash "$MXB_NF" status | grep fast)"
	# idle past the timeout: the entry expires
	wait_for -t 30 eval "! in_set $f '$key'" || fail "IPv$f: entry did not expire"
	echo go >&9
	exec 9>&-
	wait "$pid"
	grep -qx "got $BULK" "$out" || fail "IPv$f: flow broken after the idle time: $(cat "$out")"
	rx1=$(br0_rx)
	note "IPv$f: $BULK bytes sent, $((rx1 - rx0)) seen by the box's br0"
	[ $((rx1 - rx0)) -lt $((BULK / 5)) ] ||
		fail "IPv$f: the host stack saw $((rx1 - rx0)) bytes of $BULK"
}

# -T: a clear error when bad, 0 leaves the fast path out
out=$(tb_exec box bash "$MXB_NF" up -n -b br0 -T 86401 2>&1) &&
	fail "-T 86401 accepted"
case $out in *"-T: bad fast-path timeout"*) ;; *) fail "-T 86401: $out" ;; esac
out=$(tb_exec box bash "$MXB_NF" up -n -b br0 -T 0 2>&1) || fail "up -n -T 0: $out"
case $out in *"set pass4"*) fail "-T 0 still makes the fast path" ;; esac
out=$(tb_exec box bash "$MXB_NF" up -n -b br0 -T 7 2>&1) || fail "up -n -T 7: $out"
case $out in *"timeout 7s"*) ;; *) fail "-T 7 not in the sets: $out" ;; esac

# port 2525 is not the protected server's: outgoing
mxb_conf_write "$MXB_DIR/run.conf" pass pass
nf_up ${FT:-2}
mxb_start_queue "$MXB_DIR/run.conf"
ip netns exec "$(tb_ns srv)" python3 -c "$TB_BULK_SINK_PY" </dev/null >/dev/null 2>&1 &
SINK_PID=$!
TB_ATEXIT='kill $SINK_PID 2>/dev/null'
wait_for tbd_listening_tcp srv ":2525" 2525 || fail "sink on 2525 did not start"

# 1. long flows, idle past the timeout, IPv4 and IPv6
bulk 4 "$TB_C1_IP4" "$TB_SRV_IP4" 40001
bulk 6 "$TB_C1_IP6" "$TB_SRV_IP6" 40002
grep -Eq "nfq: src=$TB_C1_IP4:40001 dst=$TB_SRV_IP4:2525 port=p0 dir=outgoing action=pass" \
	"$TB_MXB_LOG" || fail "the flow was not classified pass"

# 2. a proxied flow never enters the set
mxb_conf_write "$MXB_DIR/run.conf" proxy proxy
mxb_reload
expect_glob "proxied c1 to $TB_SRV_IP4:25" "$(tb_exec c1 python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_SRV_IP4" 25 40003 0 1 </dev/null)" \
	"BANNER 220 gw.example.com*"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:40003 orig_dst=$TB_SRV_IP4:25 dir=incoming" "$TB_MXB_LOG" ||
	fail "the flow was not proxied"
tb_exec box nft list set bridge mxbridge pass4 | grep -q " 40003 " &&
	fail "a proxied flow entered the fast path"
mxb_conf_write "$MXB_DIR/run.conf" pass pass
mxb_reload

# 3. RST, then port reuse under a new classification (a long timeout,
# so that the entry of the reset flow is still there)
nf_up 600
out=$TB_STATE/rst.out
mkfifo "$TB_STATE/gorst" || fail "mkfifo"
ip netns exec "$(tb_ns c1)" python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_SRV_IP4" 25 40004 0 1 \
	<"$TB_STATE/gorst" >"$out" 2>&1 &
pid=$!
exec 9>"$TB_STATE/gorst"
wait_for mid_reached "$out" || fail "passed flow to port 25: $(cat "$out")"
grep -q "^BANNER 220 mx.example.com" "$out" || fail "not passed to Postfix: $(cat "$out")"
in_set 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 40004 . 25" || fail "passed flow to port 25 not in the set"
echo go >&9; exec 9>&-; wait "$pid"
grep -q '^RST' "$out" || fail "reset: $(cat "$out")"
in_set 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 40004 . 25" || fail "the reset flow's entry is gone too soon"
mxb_conf_write "$MXB_DIR/run.conf" proxy proxy
mxb_reload
expect_glob "same 4-tuple, now proxied" \
	"$(tb_exec c1 python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_SRV_IP4" 25 40004 0 1 </dev/null)" \
	"BANNER 220 gw.example.com*"
in_set 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 40004 . 25" && fail "a proxied 4-tuple stayed in the set"

# 4. down removes the sets with everything else
mxb_down
kill "$SINK_PID" 2>/dev/null
tb_exec box bash "$MXB_NF" down >/dev/null 2>&1 || fail "down failed"
tb_exec box nft list sets | grep -q pass && fail "a set survived down"
pass "long flows v4/v6 on the fast path, idle expiry, proxied flows kept out, RST and port reuse"
