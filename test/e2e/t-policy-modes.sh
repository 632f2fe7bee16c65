#!/bin/bash
# shellcheck disable=SC2016,SC2034,SC2254
# (eval'd wait_for conditions, glob patterns in expect on purpose)
# t-policy-modes: every port/direction mode end to end.  For incoming
# (c1 -> 192.0.2.10, Postfix) and outgoing (c1 -> 192.0.2.20, the ext
# sink), each of proxy, pass and drop, set two ways:
#   port:    in the p0 block, with the global default of that direction
#            set to something else (the block must win);
#   default: by "default DIR ACTION", with a p0 block that sets only the
#            other direction (a block that does not set a direction
#            follows the default).
# Expected:
#   proxy:   incoming: the gateway's banner, the daemon logs the session
#            (dir=incoming), Postfix sees no connection from c1;
#            outgoing (client server honoured, the default): the session
#            is relayed live: the upstream's banner comes back relayed and
#            the daemon logs the session (dir=outgoing); with
#            "client-server default ignore": the gateway's own banner;
#   pass:    the real server answers and sees the real client: Postfix's
#            log shows 192.0.2.101; the ext sink receives a message whose
#            X-Client-Addr is 192.0.2.101; the daemon logs no session;
#   drop:    the connection is refused or reset (or times out), and
#            nothing reaches Postfix, the sink or the daemon.
# t-intercept-v4.sh covers p0 incoming drop / outgoing pass / incoming
# pass with the global defaults at proxy; here the defaults always differ
# from the port's setting, so no case is the same as there.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
NF=$TB_REPO/scripts/mxbridge-netfilter
S=$TB_STATE/modes
Q=6
mkdir -p "$S/spool"

# probe NODE HOST [PORT [TIMEOUT]]: "BANNER <first line>", REFUSED, RESET,
# TIMEOUT, EOF or "ERROR <why>"  (as in t-intercept-*.sh)
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
connects() { grep -c "connect from unknown\[$1\]" "$TB_MAILLOG"; }
# sessions IP DIR: sessions of c1 to IP:25 the daemon has accepted
sessions() { grep -Ec "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$1:25 dir=$2 port=p0" "$TB_MXB_LOG"; }
expect() {	# WHAT GOT PATTERN
	case $2 in $3) ;; *) fail "$1: got '$2', want '$3'" ;; esac
}
other() {	# an action other than $1
	case $1 in proxy) echo drop ;; pass) echo drop ;; drop) echo pass ;; esac
}

# conf FILE DEF-IN DEF-OUT P0-LINES [EXTRA]
conf() {
	cat >"$1" <<EOF
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number $Q
listen incoming port 10025
listen outgoing port 10026
default incoming $2
default outgoing $3
port "p0" {
	$4
}
domain "example.com" {
	server $TB_SRV_IP4
}
match client $TB_PREFIX4 relay
$5
EOF
}
# setmode DIR ACTION port|default [EXTRA]: reload with that setting
setmode() {
	local dir=$1 act=$2 via=$3 o din dout p0 out
	o=$(other "$act")
	if [ "$via" = port ]; then
		if [ "$dir" = incoming ]; then din=$o dout=proxy; else din=proxy dout=$o; fi
		p0="$dir $act"
	else
		if [ "$dir" = incoming ]; then din=$act dout=proxy; else din=proxy dout=$act; fi
		# the block sets the other direction only (to its default)
		if [ "$dir" = incoming ]; then p0="outgoing proxy"; else p0="incoming proxy"; fi
	fi
	conf "$S/run.conf" "$din" "$dout" "$p0" "${4:-}"
	out=$(ctl reload 2>&1) || fail "reload ($dir $act via $via) refused: $out"
}

conf "$S/run.conf" proxy proxy "incoming proxy"
tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F open \
	>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
mxb_start "$S/run.conf" -v || fail "daemon did not start"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" ||
	fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"

k=0
for dir in incoming outgoing; do
	if [ $dir = incoming ]; then ip=$TB_SRV_IP4; else ip=$TB_EXT_IP4; fi
	for act in proxy pass drop; do
		for via in port default; do
			k=$((k + 1))
			what="$dir $act (via $via)"
			setmode $dir $act $via
			ns=$(sessions "$ip" $dir) npf=$(connects "$TB_C1_IP4")
			next=$(sink_count "$TB_EXT_DIR")
			r=$(probe c1 "$ip" 25 3)
			subj="t-policy-modes $k"
			case $dir/$act in
			incoming/proxy)
				expect "$what" "$r" "BANNER 220 gw.example.com*"
				wait_for eval '[ "$(sessions "$ip" $dir)" -gt "$ns" ]' ||
					fail "$what: no session with dir=$dir logged"
				sleep 0.3
				[ "$(connects "$TB_C1_IP4")" = "$npf" ] ||
					fail "$what: the connection reached Postfix" ;;
			outgoing/proxy)
				# honoured: live relay, the sink's banner relayed
				expect "$what" "$r" "BANNER 220 ext.example.net*"
				wait_for eval '[ "$(sessions "$ip" $dir)" -gt "$ns" ]' ||
					fail "$what: no session with dir=$dir logged (was it passed?)"
				# not honoured: the gateway's own banner
				setmode $dir $act $via "client-server default ignore"
				ns=$(sessions "$ip" $dir)
				r=$(probe c1 "$ip" 25 3)
				expect "$what, client-server ignore" "$r" "BANNER 220 gw.example.com*"
				wait_for eval '[ "$(sessions "$ip" $dir)" -gt "$ns" ]' ||
					fail "$what, client-server ignore: no session with dir=$dir logged" ;;
			incoming/pass)
				expect "$what" "$r" "BANNER 220 mx.example.com ESMTP*"
				wait_for eval '[ "$(connects "$TB_C1_IP4")" -gt "$npf" ]' ||
					fail "$what: Postfix's log does not show the real client $TB_C1_IP4"
				[ "$(sessions "$ip" $dir)" = "$ns" ] ||
					fail "$what: the daemon took the session" ;;
			outgoing/pass)
				expect "$what" "$r" "BANNER 220 ext.example.net*"
				tb_smtp_send c1 "$ip" alice@example.com someone@example.net "$subj" ||
					fail "$what: SMTP: $(tail -n 1 "$TB_STATE/smtp.out")"
				wait_for eval 'grep -rlq "^Subject: $subj\$" "$TB_EXT_DIR"' ||
					fail "$what: the ext sink did not receive the message"
				f=$(grep -rl "^Subject: $subj\$" "$TB_EXT_DIR" | head -n 1)
				grep -q "^X-Client-Addr: $TB_C1_IP4\$" "$f" ||
					fail "$what: the ext sink saw $(sed -n 's/^X-Client-Addr: //p' "$f"), not $TB_C1_IP4"
				[ "$(sessions "$ip" $dir)" = "$ns" ] ||
					fail "$what: the daemon took the session" ;;
			*/drop)
				case $r in
				REFUSED|RESET|TIMEOUT|EOF) ;;
				*) fail "$what: got '$r', want refused/reset" ;;
				esac
				sleep 0.3
				[ "$(connects "$TB_C1_IP4")" = "$npf" ] ||
					fail "$what: a connection reached Postfix"
				[ "$(sink_count "$TB_EXT_DIR")" = "$next" ] ||
					fail "$what: something reached the ext sink"
				[ "$(sessions "$ip" $dir)" = "$ns" ] ||
					fail "$what: the daemon took the session" ;;
			esac
		done
	done
done

st=$(ctl stats) || fail "stats failed"
for k in nfq_incoming_proxy nfq_incoming_pass nfq_incoming_drop \
	nfq_outgoing_proxy nfq_outgoing_pass nfq_outgoing_drop; do
	v=$(echo "$st" | sed -n "s/^$k=//p")
	[ -n "$v" ] && [ "$v" -ge 2 ] || fail "stats: $k=$v, want >= 2 (port and default)"
done
mxb_stop || fail "daemon needed SIGKILL"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "incoming/outgoing x proxy/pass/drop, via port block and via default"
