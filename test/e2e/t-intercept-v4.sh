#!/bin/bash
# t-intercept-v4: the interception path over IPv4 with the real rules
# (scripts/mxbridge-netfilter) and the daemon's queue and listeners.
#   - SMTP from c1 to the protected server reaches the incoming listener,
#     to another server the outgoing one (orig_dst, dir, port logged);
#   - bypass client: c2 reaches the real Postfix;
#   - non-SMTP (ping, TCP to another port) crosses untouched;
#   - after a reload, port p0 set to drop for incoming: refused, nothing
#     reaches Postfix; to pass for outgoing: the sink's own banner;
#   - p0 set to pass for incoming: mail is delivered by Postfix, whose
#     log shows the real client;
#   - mxbridgectl stats shows the decision counters.
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
sessions_to() { grep -c "session=[0-9]* client=.* orig_dst=$1 " "$TB_MXB_LOG"; }
expect() {	# WHAT GOT PATTERN
	case $2 in $3) ;; *) fail "$1: got '$2', want '$3'" ;; esac
}

conf "$S/run.conf" proxy proxy
tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F open \
	>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
mxb_start "$S/run.conf" -v || fail "daemon did not start"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" ||
	fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"

# 1. proxy: incoming and outgoing listeners
r=$(probe c1 "$TB_SRV_IP4")
expect "c1 to $TB_SRV_IP4:25" "$r" "BANNER 220 gw.example.com *"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_SRV_IP4:25 dir=incoming port=p0" \
	"$TB_MXB_LOG" || fail "no incoming session logged: $(grep session= "$TB_MXB_LOG")"
# (the outgoing proxy may relay live: the banner can be the sink's own,
# so the daemon's log tells)
r=$(probe c1 "$TB_EXT_IP4")
expect "c1 to $TB_EXT_IP4:25" "$r" "BANNER 220 *"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_EXT_IP4:25 dir=outgoing port=p0" \
	"$TB_MXB_LOG" || fail "no outgoing session logged: $(grep session= "$TB_MXB_LOG")"
grep -Eq "nfq: src=$TB_C1_IP4:[0-9]+ dst=$TB_SRV_IP4:25 port=p0 dir=incoming action=proxy" \
	"$TB_MXB_LOG" || fail "no nfq decision logged"
[ "$(connects "$TB_C1_IP4")" = 0 ] || fail "a proxied connection reached Postfix"

# 2. bypass client: c2 reaches Postfix itself
r=$(probe c2 "$TB_SRV_IP4")
expect "bypassed c2 to $TB_SRV_IP4:25" "$r" "BANNER 220 mx.example.com ESMTP*"
wait_for maillog_has "connect from unknown\[$TB_C2_IP4\]" ||
	fail "Postfix did not see the bypassed client $TB_C2_IP4"
grep -Eq "nfq: src=$TB_C2_IP4:[0-9]+ .* action=pass reason=bypass" "$TB_MXB_LOG" ||
	fail "bypass decision not logged"

# 3. non-SMTP crosses untouched: ping, and TCP to port 8025
tbd_pingall c1 "$TB_SRV_IP4" "$TB_EXT_IP4" >/dev/null || fail "ping across the bridge"
before=$(decisions)
ip netns exec "$(tb_ns srv)" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8025)); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(("hello %s\r\n" % a[0]).encode()); c.close()
' >/dev/null 2>&1 &
other=$!
wait_for tbd_listening_tcp srv ":8025" 8025 || fail "test server on 8025 did not start"
r=$(probe c1 "$TB_SRV_IP4" 8025)
kill "$other" 2>/dev/null; wait "$other" 2>/dev/null
expect "c1 to $TB_SRV_IP4:8025" "$r" "BANNER hello $TB_C1_IP4"
after=$(decisions)
[ "$before" = "$after" ] || fail "non-SMTP traffic was classified ($before -> $after)"
grep -q "orig_dst=$TB_SRV_IP4:8025" "$TB_MXB_LOG" && fail "port 8025 was intercepted"

# 4. p0 incoming drop, outgoing pass
n=$(connects "$TB_C1_IP4")
conf "$S/run.conf" drop pass
ctl reload >/dev/null || fail "reload refused"
r=$(probe c1 "$TB_SRV_IP4")
expect "dropped c1 to $TB_SRV_IP4:25" "$r" "REFUSED"
m=$(sessions_to "$TB_EXT_IP4:25")
r=$(probe c1 "$TB_EXT_IP4")
expect "passed c1 to $TB_EXT_IP4:25" "$r" "BANNER 220 ext.example.net*"
[ "$(sessions_to "$TB_EXT_IP4:25")" = "$m" ] || fail "a passed connection reached the proxy"
sleep 0.5
[ "$(connects "$TB_C1_IP4")" = "$n" ] || fail "a dropped connection reached Postfix"

# 5. p0 incoming pass: Postfix takes the mail and sees the real client
conf "$S/run.conf" pass proxy
ctl reload >/dev/null || fail "reload refused"
r=$(probe c1 "$TB_SRV_IP4")
expect "passed c1 to $TB_SRV_IP4:25" "$r" "BANNER 220 mx.example.com ESMTP*"
tb_smtp_send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-intercept pass" ||
	fail "SMTP on the pass path: $(tail -n 1 "$TB_STATE/smtp.out")"
wait_for maildir_count alice -ge 1 || fail "passed mail not delivered"
maillog_has "client=unknown\[$TB_C1_IP4\]" || fail "Postfix did not see client $TB_C1_IP4"

# 6. the counters
st=$(ctl stats) || fail "stats failed"
for k in nfq_incoming_proxy nfq_outgoing_proxy nfq_incoming_pass nfq_incoming_drop \
	nfq_outgoing_pass proxy_accepted_incoming proxy_accepted_outgoing; do
	v=$(echo "$st" | sed -n "s/^$k=//p")
	[ -n "$v" ] && [ "$v" -ge 1 ] || fail "stats: $k=$v, want >= 1: $st"
done
[ "$(echo "$st" | sed -n 's/^nfq_malformed=//p')" = 0 ] || fail "malformed packets: $st"
[ "$(echo "$st" | sed -n 's/^nfq_errors=//p')" = 0 ] || fail "queue errors: $st"

mxb_stop || fail "daemon needed SIGKILL"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "incoming/outgoing proxy, bypass, drop, pass, non-SMTP untouched, counters"
