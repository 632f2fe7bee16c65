#!/bin/bash
# t-pass-bridge: with the kernel classifier, a passed flow stays on the
# bridge from its SYN on (the daemon's table bridge mxbridge_classify):
# the box's host stack never sees it (issue 17).
#   - 5 MB flows over IPv4 and IPv6 to a port whose class is pass: both
#     directions in the daemon's flows4/flows6 while they run, not in the
#     script's pass sets, no conntrack entry, a sliver of their bytes on
#     br0, every byte arrives; status and stats count them;
#   - what must not stay bridged does not: a proxied flow, a flow from an
#     SMTP port to an SMTP port (passed through the host stack), a flow
#     to the box itself (refused: not accepted to the box);
#   - reload to the opposite classes with a passed flow and a proxied
#     session open: both go on as they were; the passed flow's reset
#     4-tuple comes again and is proxied, its entries gone;
#   - idle past the fast-path timeout (-T 2): the entry expires, the
#     flow goes on through the host stack, whose routing puts it back;
#   - kill -9 with a passed flow open, fail-closed: it goes on, a new
#     flow is refused;
#   - -T 0: no bridge table, passed flows take the host path as before.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup
BT="bridge mxbridge_classify"
BULK=5000000
# a session held open: banner, "MID", a line on stdin, then NOOP and the
# reply
TB_HOLD_PY='
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
f = c.makefile("rb")
print("BANNER " + f.readline().decode(errors="replace").strip(), flush=True)
print("MID", flush=True)
sys.stdin.readline()
c.sendall(b"NOOP\r\n")
print("REPLY " + f.readline().decode(errors="replace").strip(), flush=True)
'

nf_up() {	# FASTTO [open|closed]
	tb_exec box bash "$MXB_NF" up -b br0 -q "$MXB_QUEUE" -W "$MXB_WORKERS" -i 10025 -o 10026 \
		-s 25,2525 -T "$1" -F "${2:-open}" >"$MXB_DIR/nf.log" 2>&1 ||
		fail "mxbridge-netfilter up -T $1: $(tail -n 3 "$MXB_DIR/nf.log")"
}
# in_flows 4|6 KEY: the daemon's set flows4|flows6 holds KEY
in_flows() { tb_exec box nft list set $BT "flows$1" | grep -qF " $2 "; }
in_pass() { tb_exec box nft list set bridge mxbridge "pass$1" | grep -qF " $2 "; }
# conntracked TEXT: the box's conntrack has a flow with TEXT ("sport=N ")
conntracked() { tb_exec box grep -q "$1" /proc/net/nf_conntrack; }
br0_rx() { tb_exec box cat /sys/class/net/br0/statistics/rx_bytes; }
mid_reached() { grep -q '^MID' "$1"; }
# published WHAT: the bridge table's map vout says WHAT for p0
published() { tb_exec box nft list map $BT vout | grep -q "\"p0\" : goto $1"; }

# start_bulk TAG FAMILY SERVER SPORT [RST [PORT [BYTES]]]: a flow from
# c1 to SERVER:PORT (2525) from SPORT, half of BYTES ($BULK; 0: the
# banner) sent; "go TAG" lets it end
start_bulk() {
	local out=$TB_STATE/$1.out fifo=$TB_STATE/$1.go
	mkfifo "$fifo" || fail "mkfifo"
	ip netns exec "$(tb_ns c1)" python3 -c "$TB_BULK_CLIENT_PY" "$2" "$3" "${6:-2525}" "$4" "${7:-$BULK}" "${5:-0}" \
		<"$fifo" >"$out" 2>&1 &
	eval "PID_$1=$!"
	eval "exec {FD_$1}>\"\$fifo\""
	wait_for -t 60 mid_reached "$out" || fail "$1: first half not sent: $(cat "$out")"
}
go() {
	local fd pid
	eval "fd=\$FD_$1 pid=\$PID_$1"
	echo go >&"$fd"
	eval "exec $fd>&-"
	wait "$pid"
}
# bulk_ok TAG: every byte arrived
bulk_ok() { grep -qx "got $BULK" "$TB_STATE/$1.out" || fail "$1: flow broken: $(cat "$TB_STATE/$1.out")"; }

# p0: incoming proxy, outgoing pass (the defaults proxy); 2525 is not the
# protected server's port: a flow to it is outgoing
mxb_conf_write "$MXB_DIR/run.conf" proxy pass
nf_up 120
mxb_start_queue "$MXB_DIR/run.conf"
wait_for published keep_out || fail "no bridge table: $(grep nfq: "$TB_MXB_LOG" | tail -n 3)"
ip netns exec "$(tb_ns srv)" python3 -c "$TB_BULK_SINK_PY" </dev/null >/dev/null 2>&1 &
SINK_PID=$!
TB_ATEXIT='kill $SINK_PID 2>/dev/null'
wait_for tbd_listening_tcp srv ":2525" 2525 || fail "sink on 2525 did not start"

# 1. passed flows stay on the bridge, IPv4 and IPv6
for f in 4 6; do
	if [ $f = 4 ]; then c=$TB_C1_IP4 s=$TB_SRV_IP4; else c=$TB_C1_IP6 s=$TB_SRV_IP6; fi
	sp=4100$f
	rx0=$(br0_rx)
	start_bulk b$f $f "$s" $sp
	in_flows $f "$c . $s . $sp . 2525" || fail "IPv$f: not in flows$f: $(tb_exec box nft list set $BT flows$f)"
	in_flows $f "$s . $c . 2525 . $sp" || fail "IPv$f: reply direction not in flows$f"
	in_pass $f "$c . $s . $sp . 2525" && fail "IPv$f: the flow went through the host stack (in pass$f)"
	conntracked "sport=$sp " && fail "IPv$f: the box's conntrack saw the flow"
	tb_exec box bash "$MXB_NF" status | grep -q "^# fast path: IPv$f flows: [1-9]" ||
		fail "IPv$f: status does not count the flow: $(tb_exec box bash "$MXB_NF" status | grep fast)"
	go b$f
	bulk_ok b$f
	rx1=$(br0_rx)
	note "IPv$f: $BULK bytes passed, $((rx1 - rx0)) seen by the box's br0"
	[ $((rx1 - rx0)) -lt $((BULK / 100)) ] || fail "IPv$f: the host stack saw $((rx1 - rx0)) bytes of $BULK"
done
mxb_stats_expect nfq_kernel_bridged -ge 2 nfq_outgoing_pass -ge 2
[ "$(grep -c "orig_dst=$TB_SRV_IP4:2525" "$TB_MXB_LOG")" = 0 ] || fail "a passed flow reached the proxy"

# 2. not bridged: a proxied flow, SMTP port to SMTP port, the box itself
expect_glob "proxied c1 to $TB_SRV_IP4:25" "$(tb_exec c1 python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_SRV_IP4" 25 41003 0 1 </dev/null)" \
	"BANNER 220 gw.example.com*"
in_flows 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 41003 . 25" && fail "a proxied flow entered flows4"
r=$(tb_exec c1 python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_SRV_IP4" 2525 25 1000 0 </dev/null)
case $r in *"got 1000"*) ;; *) fail "from port 25 to 2525: $r" ;; esac
conntracked "sport=25 dport=2525 " || fail "a flow from port 25 to 2525 did not take the host path"
in_flows 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 25 . 2525" && fail "a flow between two SMTP ports entered flows4"
# the box's own address: not accepted to the box, dropped (counted by the
# inet table: the SYN reached the host stack)
d0=$(mxb_ctl stats | sed -n 's/^nfq_outgoing_drop=//p')
expect_glob "c1 to the box's $TB_BOX_IP4:2525" "$(tb_banner c1 "$TB_BOX_IP4" 2525)" REFUSED
mxb_stats_expect nfq_outgoing_drop -gt "$d0"

# 3. reload to the opposite classes: what is open goes on as it was
start_bulk b5 4 "$TB_SRV_IP4" 41005
start_bulk b7 4 "$TB_EXT_IP4" 41007 1 25 0
in_flows 4 "$TB_C1_IP4 . $TB_EXT_IP4 . 41007 . 25" || fail "the flow to $TB_EXT_IP4:25 is not in flows4"
mkfifo "$TB_STATE/h.go" || fail "mkfifo"
ip netns exec "$(tb_ns c1)" python3 -c "$TB_HOLD_PY" "$TB_SRV_IP4" 25 <"$TB_STATE/h.go" \
	>"$TB_STATE/h.out" 2>&1 &
HOLD=$!
exec {FD_h}>"$TB_STATE/h.go"
wait_for mid_reached "$TB_STATE/h.out" || fail "proxied session: $(cat "$TB_STATE/h.out")"
grep -q "^BANNER 220 gw.example.com" "$TB_STATE/h.out" || fail "not proxied: $(cat "$TB_STATE/h.out")"
mxb_conf_write "$MXB_DIR/run.conf" pass proxy
mxb_reload
wait_for published forget || fail "the reload was not published: $(tb_exec box nft list map $BT vout)"
go b5
bulk_ok b5
# b7 is reset after the reload: its entries stay (30 s) until its
# 4-tuple comes again
go b7
grep -q '^RST' "$TB_STATE/b7.out" || fail "reset: $(cat "$TB_STATE/b7.out")"
echo go >&"$FD_h"
exec {FD_h}>&-
wait "$HOLD"
grep -q "^REPLY 250" "$TB_STATE/h.out" || fail "the proxied session broke at the reload: $(cat "$TB_STATE/h.out")"
in_flows 4 "$TB_C1_IP4 . $TB_EXT_IP4 . 41007 . 25" || fail "the reset flow's entry is gone too soon"
expect_glob "same 4-tuple, now proxied" \
	"$(tb_exec c1 python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_EXT_IP4" 25 41007 0 1 </dev/null)" "BANNER 220 *"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:41007 orig_dst=$TB_EXT_IP4:25 dir=outgoing" "$TB_MXB_LOG" ||
	fail "the reused 4-tuple was not proxied: $(grep 41007 "$TB_MXB_LOG")"
in_flows 4 "$TB_C1_IP4 . $TB_EXT_IP4 . 41007 . 25" && fail "a proxied 4-tuple stayed in flows4"

# 4. idle past the timeout: the flow goes on through the host stack
mxb_conf_write "$MXB_DIR/run.conf" proxy pass
mxb_reload
nf_up 2
wait_for published keep_out || fail "reload back: not published"
wait_for eval 'tb_exec box nft list chain $BT keep | grep -q "timeout 2s"' || fail "t=2 not followed"
start_bulk b8 4 "$TB_SRV_IP4" 41008
wait_for -t 30 eval "! in_flows 4 '$TB_C1_IP4 . $TB_SRV_IP4 . 41008 . 2525'" || fail "entry did not expire"
go b8
bulk_ok b8
# its first frame routed from the client's side put it back
in_flows 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 41008 . 2525" ||
	fail "the flow did not come back to the bridge after its idle time"
conntracked "sport=41008 " || fail "after the idle time the host did not route the flow"

# 5. kill -9 with a passed flow open, fail-closed: it goes on, a new
#    flow is refused
nf_up 120 closed
wait_for eval 'tb_exec box nft list chain $BT keep | grep -q "timeout 2m"' || fail "t=120 not followed"
start_bulk b9 4 "$TB_SRV_IP4" 41009
in_flows 4 "$TB_C1_IP4 . $TB_SRV_IP4 . 41009 . 2525" || fail "not in flows4 before kill -9"
mxb_kill
go b9
bulk_ok b9
expect_glob "daemon dead, fail-closed: a new flow" "$(tb_banner c1 "$TB_SRV_IP4" 2525)" REFUSED

# 6. -T 0: no bridge table; a passed flow takes the host path
nf_up 0 open
mxb_start_queue "$MXB_DIR/run.conf"
# the table loads in the same transaction as the bridge table's removal
wait_for mxb_kernel_table || fail "-T 0: no kernel classifier"
tb_exec box nft list table $BT >/dev/null 2>&1 && fail "-T 0: the bridge table is there"
r=$(tb_exec c1 python3 -c "$TB_BULK_CLIENT_PY" 4 "$TB_SRV_IP4" 2525 41010 1000 0 </dev/null)
case $r in *"got 1000"*) ;; *) fail "-T 0: passed flow: $r" ;; esac
conntracked "sport=41010 " || fail "-T 0: the flow did not take the host path"
mxb_down
kill "$SINK_PID" 2>/dev/null
pass "passed flows bridged from the SYN (v4/v6, no conntrack), proxied/SMTP-to-SMTP/to-box kept out, reload both ways with flows open, port reuse, idle expiry, kill -9, -T 0"
