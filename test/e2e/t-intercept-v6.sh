#!/bin/bash
# t-intercept-v6: the interception path over IPv6 from c1
# (2001:db8:2::101): SMTP to the protected server's IPv6 address reaches
# the incoming listener and to another server the outgoing one; pass
# reaches the real Postfix, which sees the real client; drop is refused
# and reaches nothing; ICMPv6 and TCP to another port cross untouched.
# The protected server is named (mx.example.com: A and AAAA), so both of
# its addresses make a flow incoming.
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
	server mx.example.com port 25
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

conf "$S/run.conf" proxy proxy
tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F open \
	>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
mxb_start "$S/run.conf" -v || fail "daemon did not start"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" ||
	fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"

# 1. proxy, both directions
r=$(probe c1 "$TB_SRV_IP6")
expect "c1 to [$TB_SRV_IP6]:25" "$r" "BANNER 220 gw.example.com *"
grep -Eq "session=[0-9]+ client=\[$TB_C1_IP6\]:[0-9]+ orig_dst=\[$TB_SRV_IP6\]:25 dir=incoming port=p0" \
	"$TB_MXB_LOG" || fail "no incoming IPv6 session logged: $(grep session= "$TB_MXB_LOG")"
# (the outgoing proxy may relay live: the banner can be the sink's own,
# so the daemon's log tells)
r=$(probe c1 "$TB_EXT_IP6")
expect "c1 to [$TB_EXT_IP6]:25" "$r" "BANNER 220 *"
grep -Eq "session=[0-9]+ client=\[$TB_C1_IP6\]:[0-9]+ orig_dst=\[$TB_EXT_IP6\]:25 dir=outgoing port=p0" \
	"$TB_MXB_LOG" || fail "no outgoing IPv6 session logged: $(grep session= "$TB_MXB_LOG")"
[ "$(connects "$TB_C1_IP6")" = 0 ] || fail "a proxied connection reached Postfix"

# 2. non-SMTP: ICMPv6 and TCP to port 8025 cross untouched
tbd_pingall c1 "$TB_SRV_IP6" "$TB_EXT_IP6" >/dev/null || fail "ping6 across the bridge"
before=$(decisions)
ip netns exec "$(tb_ns srv)" python3 -c '
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8025)); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(("hello %s\r\n" % a[0]).encode()); c.close()
' >/dev/null 2>&1 &
other=$!
wait_for tbd_listening_tcp srv ":8025" 8025 || fail "test server on 8025 did not start"
r=$(probe c1 "$TB_SRV_IP6" 8025)
kill "$other" 2>/dev/null; wait "$other" 2>/dev/null
expect "c1 to [$TB_SRV_IP6]:8025" "$r" "BANNER hello $TB_C1_IP6"
[ "$(decisions)" = "$before" ] || fail "non-SMTP IPv6 traffic was classified"

# 3. drop: refused, nothing reaches Postfix
conf "$S/run.conf" drop proxy
ctl reload >/dev/null || fail "reload refused"
r=$(probe c1 "$TB_SRV_IP6")
expect "dropped c1 to [$TB_SRV_IP6]:25" "$r" "REFUSED"
sleep 0.5
[ "$(connects "$TB_C1_IP6")" = 0 ] || fail "a dropped connection reached Postfix"

# 4. pass: Postfix takes the mail and sees the real client
conf "$S/run.conf" pass proxy
ctl reload >/dev/null || fail "reload refused"
r=$(probe c1 "$TB_SRV_IP6")
expect "passed c1 to [$TB_SRV_IP6]:25" "$r" "BANNER 220 mx.example.com ESMTP*"
tb_smtp_send c1 "$TB_SRV_IP6" sender@example.org alice@example.com "t-intercept v6 pass" ||
	fail "SMTP on the IPv6 pass path: $(tail -n 1 "$TB_STATE/smtp.out")"
wait_for maildir_count alice -ge 1 || fail "passed IPv6 mail not delivered"
maillog_has "client=unknown\[$TB_C1_IP6\]" || fail "Postfix did not see client $TB_C1_IP6"

st=$(ctl stats) || fail "stats failed"
for k in nfq_incoming_proxy nfq_outgoing_proxy nfq_incoming_pass nfq_incoming_drop; do
	v=$(echo "$st" | sed -n "s/^$k=//p")
	[ -n "$v" ] && [ "$v" -ge 1 ] || fail "stats: $k=$v, want >= 1: $st"
done
mxb_stop || fail "daemon needed SIGKILL"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "IPv6: incoming/outgoing proxy, drop, pass with the real client, non-SMTP untouched"
