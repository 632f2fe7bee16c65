#!/bin/bash
# t-intercept-failmode: what SMTP meets when the daemon is not there.
#   - fail-open (-F open): daemon killed with SIGKILL, SMTP from c1 reaches
#     Postfix untouched (mail delivered, real client in its log); the same
#     after a graceful stop; a restarted daemon takes the queue back;
#   - fail-closed (-F closed): daemon killed, SMTP is refused within a few
#     seconds and nothing reaches Postfix.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
NF=$TB_REPO/scripts/mxbridge-netfilter
S=$TB_STATE/intercept
Q=5
mkdir -p "$S/spool"

# conf FILE P0-INCOMING P0-OUTGOING
conf() {
	cat >"$1" <<EOF
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number $Q
listen incoming port 10025
listen outgoing port 10026
default incoming proxy
default outgoing proxy
port "p0" {
	incoming $2
	outgoing $3
}
domain "example.com" {
	server $TB_SRV_IP4 port 25
}
bypass client $TB_C2_IP4
EOF
}

# probe NODE HOST [PORT [TIMEOUT]]: "BANNER <first line>", REFUSED, RESET,
# TIMEOUT, EOF or "ERROR <why>"
PROBE_PY='
import socket, sys
host, port, tmo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(tmo)
try:
    s.connect((host, port))
    data = b""
    while b"\n" not in data:
        d = s.recv(512)
        if not d:
            break
        data += d
    print("BANNER " + data.decode(errors="replace").splitlines()[0] if data else "EOF")
except ConnectionRefusedError:
    print("REFUSED")
except ConnectionResetError:
    print("RESET")
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print("ERROR %s" % e)
'
probe() { tb_exec "$1" python3 -c "$PROBE_PY" "$2" "${3:-25}" "${4:-5}"; }
ctl() { tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" "$@"; }
# decisions: the sum of the nfq decision counters
decisions() { ctl stats | awk -F= '/^nfq_(incoming|outgoing)_/ { n += $2 } END { print n + 0 }'; }
connects() { grep -c "connect from unknown\[$1\]" "$TB_MAILLOG"; }
expect() {	# WHAT GOT PATTERN
	case $2 in $3) ;; *) fail "$1: got '$2', want '$3'" ;; esac
}

nf_up() {	# open|closed
	tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F "$1" \
		>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up -F $1: $(tail -n 3 "$S/nf.log")"
}
start() {
	local n
	n=$(grep -c "nfq: queue=$Q open" "$TB_MXB_LOG" 2>/dev/null)
	mxb_start "$S/run.conf" -v || fail "daemon did not start"
	wait_for eval '[ "$(grep -c "nfq: queue=$Q open" "$TB_MXB_LOG")" -gt "${n:-0}" ]' ||
		fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"
}
kill9() {
	local pid
	pid=$(tr -dc 0-9 <"$TB_MXB_PIDFILE")
	[ -n "$pid" ] || fail "no daemon pid"
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	wait_for eval '! mxb_running' || fail "daemon survived SIGKILL"
	rm -f "$TB_MXB_PIDFILE"
}
proxied() {	# MSG
	local r
	r=$(probe c1 "$TB_SRV_IP4")
	expect "$1" "$r" "BANNER 220 gw.example.com *"
}

conf "$S/run.conf" proxy proxy
nf_up open
start
proxied "daemon up, fail-open"

# 1. fail-open: SIGKILL, then SMTP reaches Postfix untouched
kill9
t0=$SECONDS
r=$(probe c1 "$TB_SRV_IP4")
expect "fail-open after SIGKILL" "$r" "BANNER 220 mx.example.com ESMTP*"
tb_smtp_send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-intercept fail-open" ||
	fail "SMTP with the daemon killed: $(tail -n 1 "$TB_STATE/smtp.out")"
[ $((SECONDS - t0)) -le 5 ] || fail "fail-open took $((SECONDS - t0)) s"
wait_for maildir_count alice -ge 1 || fail "mail not delivered with the daemon killed"
maillog_has "client=unknown\[$TB_C1_IP4\]" || fail "Postfix did not see client $TB_C1_IP4"

# 2. a new daemon takes the queue back; after a graceful stop, fail-open too
start
proxied "restarted daemon"
tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" stats | grep -q '^nfq_incoming_proxy=1$' ||
	fail "restarted daemon's counters: $(tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" stats)"
mxb_stop || fail "daemon needed SIGKILL"
r=$(probe c1 "$TB_SRV_IP4")
expect "fail-open after SIGTERM" "$r" "BANNER 220 mx.example.com ESMTP*"

# 3. fail-closed: SIGKILL, then SMTP is refused and reaches nothing
nf_up closed
start
proxied "daemon up, fail-closed"
kill9
n=$(connects "$TB_C1_IP4")
t0=$SECONDS
r=$(probe c1 "$TB_SRV_IP4" 25 5)
case $r in
REFUSED|RESET|TIMEOUT|EOF) ;;
*) fail "fail-closed after SIGKILL: got '$r'" ;;
esac
[ $((SECONDS - t0)) -le 6 ] || fail "fail-closed answer took $((SECONDS - t0)) s"
r=$(probe c1 "$TB_SRV_IP6" 25 5)
case $r in
REFUSED|RESET|TIMEOUT|EOF) ;;
*) fail "fail-closed (IPv6) after SIGKILL: got '$r'" ;;
esac
sleep 0.5
[ "$(connects "$TB_C1_IP4")" = "$n" ] || fail "fail-closed: a connection reached Postfix"
# non-SMTP still crosses
tbd_pingall c1 "$TB_SRV_IP4" >/dev/null || fail "ping with fail-closed and no daemon"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "fail-open (SIGKILL, SIGTERM), restart, fail-closed"
