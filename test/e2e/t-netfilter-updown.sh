#!/bin/bash
# t-netfilter-updown.sh -- end-to-end test of scripts/mxbridge-netfilter.
#
# Builds its own three network namespaces (client, box, server) named with a
# unique prefix, with the box as an inline bridge between the other two, and
# checks:
#   1. up/down leave the box exactly as it was (iptables-save, ip6tables-save,
#      nft ruleset, ip rules and routes of both families), up is idempotent,
#      down with nothing up succeeds, other people's rules survive;
#   2. with no daemon, fail-open passes SMTP (the server sees the client's
#      own address) and fail-closed refuses it;
#   3. TPROXY: with the daemon's classification simulated by a MARK rule,
#      SMTP lands on IP_TRANSPARENT listeners in the box with the original
#      destination as local address (IPv4 and IPv6, incoming and outgoing),
#      the accepted socket's SO_MARK carrying the ingress port and class
#      (tcp_fwmark_accept) and not the deliver-locally bit,
#      class pass reaches the server, class drop is refused; then the same
#      through the real queue, with a stand-in for the daemon's nfq module
#      answering NF_REPEAT with the class mark; non-SMTP traffic is bridged
#      untouched;
#   4. the nft back end: on a kernel without the nft queue expression,
#      -B nft is refused cleanly and its rule set is loaded from the -n
#      script with the queue statement replaced (by a classifying mark, or
#      by nothing as with no daemon); with the expression, for real.
# Also: -n prints a script that does what up/down do.  MXBRIDGE_NETFILTER
# overrides the script under test.
# Only documentation addresses are used and no namespace has a route out.
#
# Exit: 0 pass, 1 fail (one line reason), 77 skip.

set -u
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=${MXBRIDGE_NETFILTER:-$HERE/../../scripts/mxbridge-netfilter}
T=t-netfilter-updown

PFX=nft$$
NSC=${PFX}c
NSB=${PFX}b
NSS=${PFX}s
TMP=
PIDS=

skip() { echo "$T: SKIP: $*"; exit 77; }
fail() { echo "$T: FAIL: $*"; exit 1; }
ok() { echo "ok - $*"; }

cleanup() {
	local p
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	for p in "$NSC" "$NSB" "$NSS"; do ip netns del "$p" 2>/dev/null; done
	[ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---------------------------------------------------------------- preflight
[ "$(id -u)" = 0 ] || skip "needs root"
for c in ip nft iptables ip6tables iptables-restore ip6tables-restore python3; do
	command -v "$c" >/dev/null 2>&1 || skip "$c not found"
done
[ -x "$SCRIPT" ] || fail "$SCRIPT is not executable"
ip netns add "$NSB" 2>/dev/null || skip "cannot create network namespaces"
ip netns add "$NSC" || fail "cannot create namespace $NSC"
ip netns add "$NSS" || fail "cannot create namespace $NSS"
TMP=$(mktemp -d /tmp/$T.XXXXXX) || fail "mktemp"

inc() { ip netns exec "$NSC" "$@"; }
inb() { ip netns exec "$NSB" "$@"; }
ins() { ip netns exec "$NSS" "$@"; }
# -W 1: the stand-in reads one queue
nf() { inb env MXBRIDGE_WORKERS=1 "$SCRIPT" "$@"; }

# ---------------------------------------------------------------- helpers
cat > "$TMP/server.py" <<'EOF'
# listen on port 25 and 80, v4 and v6; greet with the peer address seen
import ctypes, signal
ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG: go with the test
import os, select, socket, sys
log = open(sys.argv[1], "a", buffering=1)
socks = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for port in (25, 80):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        s.listen(16)
        socks.append(s)
open(sys.argv[2], "w").close()
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        c, peer = s.accept()
        port = c.getsockname()[1]
        log.write("%d %s\n" % (port, peer[0]))
        c.sendall(("220 server %s\r\n" % peer[0]).encode())
        c.close()
EOF
cat > "$TMP/tproxy.py" <<'EOF'
# IP_TRANSPARENT listeners on 10025/10026, v4 and v6; greet with the
# accepted socket's local address (the original destination) and the peer;
# its SO_MARK goes to the file argv[2], one "port mark" line per accept
import ctypes, signal
ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG: go with the test
import select, socket, sys
IP_TRANSPARENT, IPV6_TRANSPARENT, SO_MARK = 19, 75, 36
socks = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for port in (10025, 10026):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        s.bind((addr, port))
        s.listen(16)
        socks.append(s)
open(sys.argv[1], "w").close()
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        c, peer = s.accept()
        me = c.getsockname()
        with open(sys.argv[2], "a") as m:
            m.write("%d %#x\n" % (s.getsockname()[1], c.getsockopt(socket.SOL_SOCKET, SO_MARK)))
        c.sendall(("220 tproxy%d %s %d %s\r\n" % (s.getsockname()[1], me[0], me[1], peer[0])).encode())
        c.close()
EOF
cat > "$TMP/connect.py" <<'EOF'
# connect.py ADDR PORT TIMEOUT: print the greeting; exit 0 ok, 2 refused,
# 3 timeout, 4 other error
import socket, sys
addr, port, tmo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(tmo)
try:
    s.connect((addr, port))
    data = b""
    while not data.endswith(b"\n"):
        d = s.recv(512)
        if not d:
            break
        data += d
    print(data.decode().strip())
    sys.exit(0)
except ConnectionRefusedError:
    print("REFUSED"); sys.exit(2)
except socket.timeout:
    print("TIMEOUT"); sys.exit(3)
except OSError as e:
    print("ERROR %s" % e); sys.exit(4)
EOF
cat > "$TMP/ping.py" <<'EOF'
# ping.py ADDR: one ICMP echo; print the reply's TTL / hop limit
import os, socket, struct, sys, time
addr = sys.argv[1]
ident = os.getpid() & 0xffff
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
if ":" in addr:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, 51, 1)          # IPV6_RECVHOPLIMIT
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, 1) + b"mxb", (addr, 0))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    p = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"mxb"
    p = p[:2] + struct.pack("!H", csum(p)) + p[4:]
    s.sendto(p, (addr, 0))
s.settimeout(0.5)
end = time.time() + 3
while time.time() < end:
    try:
        data, anc, _, src = s.recvmsg(2048, 64)
    except socket.timeout:
        continue
    if ":" in addr:
        if data[0] == 129 and struct.unpack("!H", data[4:6])[0] == ident:
            for lvl, typ, val in anc:
                if lvl == socket.IPPROTO_IPV6 and typ == 52:   # IPV6_HOPLIMIT
                    print(struct.unpack("i", val)[0]); sys.exit(0)
            print("?"); sys.exit(0)
    else:
        hl = (data[0] & 15) * 4
        if data[hl] == 0 and struct.unpack("!H", data[hl+4:hl+6])[0] == ident:
            print(data[8]); sys.exit(0)
print("TIMEOUT"); sys.exit(3)
EOF
cat > "$TMP/nfq.py" <<'EOF'
# nfq.py QUEUE CLASSFILE LOG READY: a stand-in for the daemon's nfq module.
# Binds the queue and answers every packet NF_REPEAT with
# mark = (mark & 0xffff) | CLASS, CLASS read from CLASSFILE at each packet;
# logs "mark indev" per packet.
import ctypes, signal
ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG: go with the test
import os, socket, struct, sys
q = int(sys.argv[1])
log = open(sys.argv[3], "a", buffering=1)
NETLINK_NETFILTER, SUBSYS_QUEUE = 12, 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NF_REPEAT = 4
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
s.bind((0, 0))
seq = 0
def attr(t, data):
    a = struct.pack("=HH", 4 + len(data), t) + data
    return a + b"\0" * ((4 - len(a) % 4) % 4)
def send(msg, payload, flags=NLM_F_REQUEST):
    global seq
    seq += 1
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(q)) + payload
    s.send(struct.pack("=IHHII", 16 + len(body), (SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body)
def ack():
    data = s.recv(65536)
    ln, typ = struct.unpack_from("=IH", data)
    if typ == 2:   # NLMSG_ERROR
        err = struct.unpack_from("=i", data, 16)[0]
        if err:
            raise OSError(-err, os.strerror(-err))
send(MSG_CONFIG, attr(1, struct.pack("=BBH", 1, 0, 0)), NLM_F_REQUEST | NLM_F_ACK)  # CMD_BIND
ack()
send(MSG_CONFIG, attr(2, struct.pack("!IB", 0xffff, 2)), NLM_F_REQUEST | NLM_F_ACK)  # copy packet
ack()
open(sys.argv[4], "w").close()
while True:
    data = s.recv(65536)
    off = 0
    while off + 16 <= len(data):
        ln, typ = struct.unpack_from("=IH", data, off)
        if ln < 16:
            break
        if typ == (SUBSYS_QUEUE << 8) | MSG_PACKET:
            pos, end = off + 20, off + ln
            pid = mark = indev = None
            while pos + 4 <= end:
                alen, atyp = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                atyp &= 0x7fff
                if atyp == 1:
                    pid = struct.unpack_from("!I", data, pos + 4)[0]
                elif atyp == 3:
                    mark = struct.unpack_from("!I", data, pos + 4)[0]
                elif atyp == 4:
                    indev = struct.unpack_from("!I", data, pos + 4)[0]
                pos += (alen + 3) & ~3
            mark = mark or 0
            log.write("0x%x %s\n" % (mark, indev))
            with open(sys.argv[2]) as f:
                cls = int(f.read().strip(), 0)
            newmark = (mark & 0xffff) | cls
            send(MSG_VERDICT, attr(2, struct.pack("!II", NF_REPEAT, pid)) + attr(3, struct.pack("!I", newmark)))
        off += (ln + 3) & ~3
EOF

# connect from the client; echo the outcome, return connect.py's status
cconnect() { inc python3 "$TMP/connect.py" "$1" "$2" "${3:-3}"; }

# wait for a file to appear (a listener's ready flag)
waitfile() {
	local i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1)); [ $i -le 100 ] || return 1
		sleep 0.05
	done
}

snapshot() {
	{
		inb iptables-save; inb ip6tables-save; inb nft list ruleset
		inb ip rule; inb ip -6 rule
		inb ip route show table all; inb ip -6 route show table all
	} 2>/dev/null | grep -v '^#' |
		sed -e 's/\[[0-9]*:[0-9]*\]//' -e 's/counter packets [0-9]* bytes [0-9]*/counter/' > "$1"
}
same() {  # same FILE1 FILE2 WHAT
	cmp -s "$1" "$2" && return 0
	diff -u "$1" "$2" | sed -n '3,40p' >&2
	fail "$3"
}

# number of packets the first rule of a chain matching PATTERN has seen
ipt_count() {  # family table pattern
	local cmd=iptables
	[ "$1" = 6 ] && cmd=ip6tables
	inb $cmd -w -t "$2" -L MXBRIDGE -v -x -n | awk -v pat="$3" '$0 ~ pat { print $1; exit }'
}

# ---------------------------------------------------------------- testbed
for ns in "$NSC" "$NSB" "$NSS"; do
	ip netns exec "$ns" sh -c '
		ip link set lo up
		for k in /proc/sys/net/ipv6/conf/all/accept_dad /proc/sys/net/ipv6/conf/default/accept_dad \
		         /proc/sys/net/ipv6/conf/all/accept_ra /proc/sys/net/ipv6/conf/default/accept_ra; do
			echo 0 > $k
		done' || fail "sysctl in $ns"
done
ip link add "${PFX}c0" netns "$NSC" type veth peer name p0 netns "$NSB" || fail "veth client"
ip link add "${PFX}s0" netns "$NSS" type veth peer name p1 netns "$NSB" || fail "veth server"
inc ip link set "${PFX}c0" name eth0
ins ip link set "${PFX}s0" name eth0
inb ip link add br0 type bridge stp_state 0 || fail "bridge"
inb ip link set p0 master br0
inb ip link set p1 master br0
for l in p0 p1 br0; do inb ip link set "$l" up; done
inb ip addr add 192.0.2.2/24 dev br0
inb ip addr add 2001:db8:2::2/64 dev br0 nodad
inc ip link set eth0 up
inc ip addr add 192.0.2.101/24 dev eth0
inc ip addr add 2001:db8:2::101/64 dev eth0 nodad
ins ip link set eth0 up
ins ip addr add 192.0.2.10/24 dev eth0
ins ip addr add 2001:db8:2::10/64 dev eth0 nodad

# the appliance's routing sysctls (up sets them too; set here so that the
# kernel's own reaction to them, e.g. IPv6 anycast routes, is in the first
# snapshot); bridge-nf-call-ip*tables stay at the new namespace's 1 so that
# the test sees up set them to 0
inb sh -c '
	echo 1 > /proc/sys/net/ipv4/ip_forward
	echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
	for k in /proc/sys/net/ipv4/conf/*/send_redirects; do echo 0 > $k; done' ||
	fail "box sysctls"
[ "$(inb cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ] ||
	skip "net.bridge.bridge-nf-call-iptables not 1 in a new namespace"

# background helpers: "ip netns exec" itself (it execs), so that $! is the
# helper's own pid
ip netns exec "$NSS" python3 "$TMP/server.py" "$TMP/server.log" "$TMP/server.ready" &
PIDS="$PIDS $!"
waitfile "$TMP/server.ready" || fail "server listener did not start"

# plain bridge works before anything is set up
out=$(cconnect 192.0.2.10 25) || fail "no SMTP across the plain bridge: $out"
out=$(cconnect 2001:db8:2::10 25) || fail "no IPv6 SMTP across the plain bridge: $out"

# ---------------------------------------------------------------- case 1
snapshot "$TMP/s0"
nf down >/dev/null 2>"$TMP/err" || fail "down with nothing up failed: $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/s0" "$TMP/s" "down with nothing up changed the box"
nf status >/dev/null; rc=$?
[ $rc = 3 ] || fail "status when down: exit $rc, want 3"
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
nf status >/dev/null; rc=$?
[ $rc = 0 ] || fail "status when up: exit $rc, want 0"
for k in iptables ip6tables; do
	[ "$(inb cat /proc/sys/net/bridge/bridge-nf-call-$k)" = 0 ] ||
		fail "up did not set net.bridge.bridge-nf-call-$k=0"
done
snapshot "$TMP/s1"
cmp -s "$TMP/s0" "$TMP/s1" && fail "up changed nothing"
nf up 2>"$TMP/err" || fail "second up: $(head -n1 "$TMP/err")"
snapshot "$TMP/s2"
same "$TMP/s1" "$TMP/s2" "second up gave another rule set"
nf down 2>"$TMP/err" || fail "down: $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/s0" "$TMP/s" "down did not restore the box"
nf status >/dev/null; rc=$?
[ $rc = 3 ] || fail "status after down: exit $rc, want 3"
[ "$(inb cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 0 ] ||
	fail "down changed net.bridge.bridge-nf-call-iptables (documented: left as is)"
ok "up, up again and down leave the box as it was"

# changing options on the fly, then down
nf up -F closed -s 25,465,587 -t 200 -r 200 -q 3 2>"$TMP/err" || fail "up -F closed ...: $(head -n1 "$TMP/err")"
nf up -4 2>"$TMP/err" || fail "up -4: $(head -n1 "$TMP/err")"
inb ip6tables -t mangle -S MXBRIDGE >/dev/null 2>&1 && fail "up -4 left the ip6tables chain"
inb ip -6 rule | grep -q 'proto 109' && fail "up -4 left the ip -6 rule"
inb ip rule | grep -q 'lookup 200' && fail "re-up left the rule for table 200"
nf up -6 -p p1 2>"$TMP/err" || fail "up -6 -p p1: $(head -n1 "$TMP/err")"
inb nft list table bridge mxbridge | grep -q '"p0"' && fail "up -p p1 still diverts p0"
nf down 2>"$TMP/err" || fail "down after option changes: $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/s0" "$TMP/s" "down after option changes did not restore the box"
ok "re-up with other options replaces the set; down still restores the box"

# -n prints a script doing what the action would do
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
nf up -4 -F closed 2>"$TMP/err" || fail "up -4 -F closed: $(head -n1 "$TMP/err")"
snapshot "$TMP/n1"
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
snapshot "$TMP/n0"
nf up -4 -F closed -n > "$TMP/up.sh" || fail "up -n"
snapshot "$TMP/s"
same "$TMP/n0" "$TMP/s" "up -n changed the box"
inb sh -e "$TMP/up.sh" >/dev/null 2>"$TMP/err" || fail "the up -n script failed: $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/n1" "$TMP/s" "the up -n script did not do what up does"
nf down -n > "$TMP/down.sh" || fail "down -n"
inb sh -e "$TMP/down.sh" >/dev/null 2>"$TMP/err" || fail "the down -n script failed: $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/s0" "$TMP/s" "the down -n script did not restore the box"
ok "-n prints a script equivalent to up and down"

# a rule someone adds after up to a base chain that up created stays
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
inb iptables -t mangle -A PREROUTING -p udp --dport 9 -j ACCEPT
nf down 2>"$TMP/err" || fail "down: $(head -n1 "$TMP/err")"
inb iptables -t mangle -S PREROUTING | grep -q -e '--dport 9 -j ACCEPT' ||
	fail "down removed a rule added after up"
inb iptables -t mangle -S MXBRIDGE >/dev/null 2>&1 && fail "down left the mangle MXBRIDGE chain"
inb iptables -t mangle -D PREROUTING -p udp --dport 9 -j ACCEPT

# other people's rules, rules and routes stay
inb iptables -t mangle -A PREROUTING -p udp --dport 9 -j ACCEPT
inb ip6tables -t filter -A FORWARD -p udp --dport 9 -j ACCEPT
inb iptables -t filter -N OTHER
inb nft add table inet other
inb nft add chain inet other c '{ type filter hook prerouting priority 0; policy accept; }'
inb nft add rule inet other c udp dport 9 counter
inb ip rule add from 192.0.2.200 lookup 100 pref 100
inb ip -6 rule add from 2001:db8:2::200 lookup 100 pref 100
inb ip route add 192.0.2.128/25 dev br0 table 100
inb ip -6 route add 2001:db8:2:1::/64 dev br0 table 100
snapshot "$TMP/f0"
nf up 2>"$TMP/err" || fail "up with foreign rules: $(head -n1 "$TMP/err")"
snapshot "$TMP/f1"
nf up 2>"$TMP/err" || fail "second up with foreign rules: $(head -n1 "$TMP/err")"
snapshot "$TMP/f2"
same "$TMP/f1" "$TMP/f2" "second up gave another rule set (foreign rules present)"
nf down 2>"$TMP/err" || fail "down with foreign rules: $(head -n1 "$TMP/err")"
snapshot "$TMP/f"
same "$TMP/f0" "$TMP/f" "down touched other people's rules"
ok "other people's rules, ip rules and routes stay"
inb iptables -t mangle -D PREROUTING -p udp --dport 9 -j ACCEPT
inb ip6tables -t filter -D FORWARD -p udp --dport 9 -j ACCEPT
inb iptables -t filter -X OTHER
inb nft delete table inet other
inb ip rule del from 192.0.2.200 lookup 100 pref 100
inb ip -6 rule del from 2001:db8:2::200 lookup 100 pref 100
inb ip route del 192.0.2.128/25 dev br0 table 100
inb ip -6 route del 2001:db8:2:1::/64 dev br0 table 100
# iptables-nft leaves the (now empty) tables and base chains it created
# for the foreign rules: they are the baseline from here on
snapshot "$TMP/s0"

# the nft back end cannot load on a kernel without the nft queue expression,
# and a failed up must leave nothing behind
if ! inb nft -f - >/dev/null 2>&1 <<EOF
add table ip ${PFX}probe
add chain ip ${PFX}probe c
add rule ip ${PFX}probe c queue num 0 bypass
delete table ip ${PFX}probe
EOF
then
	nf up -B nft >/dev/null 2>&1 && fail "up -B nft succeeded without the nft queue expression"
	snapshot "$TMP/s"
	same "$TMP/s0" "$TMP/s" "a failed up -B nft left something behind"
	nf up 2>"$TMP/err" || fail "up (auto): $(head -n1 "$TMP/err")"
	inb iptables -t mangle -S MXBRIDGE >/dev/null 2>&1 || fail "auto did not fall back to iptables"
	nf down || fail "down"
	ok "no nft queue expression: -B nft refused cleanly, auto picks iptables"
	NFTQUEUE=0
else
	NFTQUEUE=1
fi

# ---------------------------------------------------------------- case 2
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
for dst in 192.0.2.10 2001:db8:2::10; do
	case $dst in *:*) src=2001:db8:2::101 f=6 ;; *) src=192.0.2.101 f=4 ;; esac
	before=$(ipt_count $f mangle NFQUEUE)
	out=$(cconnect $dst 25) || fail "fail-open, no daemon: $dst:25 $out"
	[ "$out" = "220 server $src" ] || fail "fail-open: server saw '$out', want 220 server $src"
	after=$(ipt_count $f mangle NFQUEUE)
	[ "${after:-0}" -gt "${before:-0}" ] || fail "fail-open: SYN to $dst:25 did not reach the NFQUEUE rule"
done
ok "fail-open without daemon: SMTP passes (IPv4, IPv6), server sees the client"

nf up -F closed 2>"$TMP/err" || fail "up -F closed: $(head -n1 "$TMP/err")"
for dst in 192.0.2.10 2001:db8:2::10; do
	n0=$(wc -l < "$TMP/server.log")
	t0=$(date +%s)
	out=$(cconnect $dst 25 3); rc=$?
	[ $rc = 0 ] && fail "fail-closed, no daemon: $dst:25 got through ($out)"
	[ $rc = 2 ] || fail "fail-closed, no daemon: $dst:25 $out, want a refusal (RST)"
	[ $(( $(date +%s) - t0 )) -le 3 ] || fail "fail-closed: refusal took too long"
	n1=$(wc -l < "$TMP/server.log")
	[ "$n0" = "$n1" ] || fail "fail-closed: the server saw the connection"
done
ok "fail-closed without daemon: SMTP refused at once with RST (IPv4, IPv6)"

# ---------------------------------------------------------------- case 3
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
ip netns exec "$NSB" python3 "$TMP/tproxy.py" "$TMP/tproxy.ready" "$TMP/marks" &
PIDS="$PIDS $!"
waitfile "$TMP/tproxy.ready" || fail "tproxy listener did not start"

# put a rule that classifies every new SMTP flow as CLASS in front of the
# NFQUEUE rule (stands for the daemon's NF_REPEAT verdict)
classify() {  # family class
	local cmd=iptables n
	[ "$1" = 6 ] && cmd=ip6tables
	n=$(inb $cmd -t mangle -S MXBRIDGE | grep -n -e '-j NFQUEUE' -e 'mxb-test' | head -n1 | cut -d: -f1)
	[ -n "$n" ] || fail "no NFQUEUE rule in $cmd mangle MXBRIDGE"
	n=$((n - 1))
	if inb $cmd -t mangle -S MXBRIDGE | grep -q mxb-test; then
		inb $cmd -t mangle -R MXBRIDGE $n -p tcp -m mark --mark 0/0xf0000 -m multiport --dports 25 \
			-m comment --comment mxb-test -j MARK --set-xmark "$2/0xf0000" || fail "cannot replace the class rule"
	else
		inb $cmd -t mangle -I MXBRIDGE $n -p tcp -m mark --mark 0/0xf0000 -m multiport --dports 25 \
			-m comment --comment mxb-test -j MARK --set-xmark "$2/0xf0000" || fail "cannot insert the class rule"
	fi
}

# lastmark PORT CLASS: the last accepted socket was on listener PORT and
# its SO_MARK is p0's ifindex with CLASS (tcp_fwmark_accept), without the
# deliver-locally bit that would route its replies back to the box
p0idx=$(inb cat /sys/class/net/p0/ifindex)
lastmark() {
	local want got
	want="$1 $(printf '%#x' $(( $2 | p0idx )))"
	got=$(tail -n 1 "$TMP/marks" 2>/dev/null)
	[ "$got" = "$want" ] || fail "accepted socket's listener and mark: got '$got', want '$want'"
}
for dst in 192.0.2.10 2001:db8:2::10; do
	case $dst in *:*) src=2001:db8:2::101 f=6 ;; *) src=192.0.2.101 f=4 ;; esac
	n0=$(wc -l < "$TMP/server.log")
	classify $f 0x20000
	out=$(cconnect $dst 25) || fail "outgoing class: $dst:25 $out"
	[ "$out" = "220 tproxy10026 $dst 25 $src" ] ||
		fail "outgoing class: got '$out', want '220 tproxy10026 $dst 25 $src'"
	lastmark 10026 0x20000
	classify $f 0x10000
	out=$(cconnect $dst 25) || fail "incoming class: $dst:25 $out"
	[ "$out" = "220 tproxy10025 $dst 25 $src" ] ||
		fail "incoming class: got '$out', want '220 tproxy10025 $dst 25 $src'"
	lastmark 10025 0x10000
	n1=$(wc -l < "$TMP/server.log")
	[ "$n0" = "$n1" ] || fail "tproxied connection reached the server too"
	classify $f 0x40000
	out=$(cconnect $dst 25 3); rc=$?
	[ $rc = 2 ] || fail "drop class: $dst:25 $out, want a refusal (RST)"
	classify $f 0x30000
	out=$(cconnect $dst 25) || fail "pass class: $dst:25 $out"
	[ "$out" = "220 server $src" ] || fail "pass class: got '$out', want 220 server $src"
done
ok "TPROXY: outgoing/incoming land on the transparent listeners with the original destination and the SYN's port and class in SO_MARK; pass routes on, drop refuses (IPv4, IPv6)"

# The real round trip through the queue: a stand-in for the daemon's nfq
# module answers NF_REPEAT with the class in the mark (the contract).
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
inb iptables -t mangle -S MXBRIDGE | grep -q mxb-test && fail "up did not flush the chain"
echo 0x20000 > "$TMP/class"
ip netns exec "$NSB" python3 "$TMP/nfq.py" 0 "$TMP/class" "$TMP/nfq.log" "$TMP/nfq.ready" &
NFQPID=$!
PIDS="$PIDS $NFQPID"
waitfile "$TMP/nfq.ready" || fail "stand-in nfq daemon did not start"
for dst in 192.0.2.10 2001:db8:2::10; do
	case $dst in *:*) src=2001:db8:2::101 ;; *) src=192.0.2.101 ;; esac
	echo 0x20000 > "$TMP/class"
	out=$(cconnect $dst 25) || fail "nfq outgoing: $dst:25 $out"
	[ "$out" = "220 tproxy10026 $dst 25 $src" ] ||
		fail "nfq outgoing: got '$out', want '220 tproxy10026 $dst 25 $src'"
	lastmark 10026 0x20000
	echo 0x10000 > "$TMP/class"
	out=$(cconnect $dst 25) || fail "nfq incoming: $dst:25 $out"
	[ "$out" = "220 tproxy10025 $dst 25 $src" ] ||
		fail "nfq incoming: got '$out', want '220 tproxy10025 $dst 25 $src'"
	echo 0x30000 > "$TMP/class"
	out=$(cconnect $dst 25) || fail "nfq pass: $dst:25 $out"
	[ "$out" = "220 server $src" ] || fail "nfq pass: got '$out', want 220 server $src"
	echo 0x40000 > "$TMP/class"
	out=$(cconnect $dst 25 3); rc=$?
	[ $rc = 2 ] || fail "nfq drop: $dst:25 $out, want a refusal (RST)"
done
[ "$(wc -l < "$TMP/nfq.log")" = 8 ] ||
	fail "stand-in nfq saw $(wc -l < "$TMP/nfq.log") packets, want 8 (one SYN per connection)"
awk -v want="$(printf '0x%x' "$p0idx")" '$1 != want { exit 1 }' "$TMP/nfq.log" ||
	fail "queued mark is not the ingress port's ifindex $p0idx: $(sort -u "$TMP/nfq.log" | head -n1)"
# fail-closed does not get in the way while the daemon answers
nf up -F closed 2>"$TMP/err" || fail "up -F closed: $(head -n1 "$TMP/err")"
echo 0x20000 > "$TMP/class"
out=$(cconnect 192.0.2.10 25) || fail "nfq, fail-closed: $out"
[ "$out" = "220 tproxy10026 192.0.2.10 25 192.0.2.101" ] || fail "nfq, fail-closed: got '$out'"
# the daemon goes away: fail-closed refuses, fail-open passes
kill "$NFQPID"; wait "$NFQPID" 2>/dev/null
out=$(cconnect 192.0.2.10 25 3); rc=$?
[ $rc = 2 ] || fail "daemon gone, fail-closed: $out, want a refusal (RST)"
nf up 2>"$TMP/err" || fail "up: $(head -n1 "$TMP/err")"
out=$(cconnect 192.0.2.10 25) || fail "daemon gone, fail-open: $out"
[ "$out" = "220 server 192.0.2.101" ] || fail "daemon gone, fail-open: got '$out'"
ok "NFQUEUE round trip: NF_REPEAT with the class mark drives TPROXY/pass/drop; mark carries the ingress port; daemon gone: closed refuses, open passes"

# non-SMTP crosses as plain bridged frames: TTL not decremented, and it
# works with IP forwarding off in the box
for dst in 192.0.2.10 2001:db8:2::10; do
	ttl=$(inc python3 "$TMP/ping.py" $dst) || fail "ping $dst: $ttl"
	[ "$ttl" = 64 ] || fail "ping $dst: ttl $ttl, want 64 (bridged, not routed)"
done
fwd4=$(inb cat /proc/sys/net/ipv4/ip_forward)
fwd6=$(inb cat /proc/sys/net/ipv6/conf/all/forwarding)
inb sh -c 'echo 0 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv6/conf/all/forwarding'
for dst in 192.0.2.10 2001:db8:2::10; do
	case $dst in *:*) src=2001:db8:2::101 ;; *) src=192.0.2.101 ;; esac
	out=$(cconnect $dst 80) || fail "TCP $dst:80 across the bridge: $out"
	[ "$out" = "220 server $src" ] || fail "TCP $dst:80: got '$out'"
done
inb sh -c "echo $fwd4 > /proc/sys/net/ipv4/ip_forward; echo $fwd6 > /proc/sys/net/ipv6/conf/all/forwarding"
ok "non-SMTP (ICMP echo, TCP/80) is bridged untouched (IPv4, IPv6)"

nf down 2>"$TMP/err" || fail "down: $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/s0" "$TMP/s" "down after traffic did not restore the box"

# ---------------------------------------------------------------- case 4
# The nft back end, loaded from the -n script.  Without the nft queue
# expression its queue statement is replaced: by a mark that classifies as
# outgoing, then by nothing (as if bypassed with no daemon).
if [ "$NFTQUEUE" = 0 ]; then
	nf up -B nft -n > "$TMP/nft.sh" || fail "up -B nft -n"
	sed 's/queue num 0 bypass/meta mark set meta mark | 0x00020000/' "$TMP/nft.sh" | inb sh -e ||
		fail "nft back end rule set (queue replaced) does not load"
else
	nf up -B nft 2>"$TMP/err" || fail "up -B nft: $(head -n1 "$TMP/err")"
fi
nf status >/dev/null; rc=$?
[ $rc = 0 ] || fail "status with the nft back end: exit $rc, want 0"
if [ "$NFTQUEUE" = 1 ]; then
	: > "$TMP/nfq.log"
	echo 0x20000 > "$TMP/class"
	ip netns exec "$NSB" python3 "$TMP/nfq.py" 0 "$TMP/class" "$TMP/nfq.log" "$TMP/nfq2.ready" &
	NFQPID=$!
	PIDS="$PIDS $NFQPID"
	waitfile "$TMP/nfq2.ready" || fail "stand-in nfq daemon did not start"
	for dst in 192.0.2.10 2001:db8:2::10; do
		case $dst in *:*) src=2001:db8:2::101 ;; *) src=192.0.2.101 ;; esac
		out=$(cconnect $dst 25) || fail "nft back end, nfq outgoing: $dst:25 $out"
		[ "$out" = "220 tproxy10026 $dst 25 $src" ] ||
			fail "nft back end: got '$out', want '220 tproxy10026 $dst 25 $src'"
		lastmark 10026 0x20000
	done
	kill "$NFQPID"; wait "$NFQPID" 2>/dev/null
	ok "nft back end: NF_REPEAT and TPROXY to the outgoing listener (IPv4, IPv6)"
	nf up -B nft -F closed 2>"$TMP/err" || fail "up -B nft -F closed: $(head -n1 "$TMP/err")"
	for dst in 192.0.2.10 2001:db8:2::10; do
		out=$(cconnect $dst 25 3); rc=$?
		[ $rc = 2 ] || fail "nft back end, fail-closed, no daemon: $dst:25 $out, want a refusal (RST)"
	done
	ok "nft back end, fail-closed: SMTP refused without daemon (IPv4, IPv6)"
else
	for dst in 192.0.2.10 2001:db8:2::10; do
		case $dst in *:*) src=2001:db8:2::101 ;; *) src=192.0.2.101 ;; esac
		out=$(cconnect $dst 25) || fail "nft back end, outgoing class: $dst:25 $out"
		[ "$out" = "220 tproxy10026 $dst 25 $src" ] ||
			fail "nft back end: got '$out', want '220 tproxy10026 $dst 25 $src'"
		lastmark 10026 0x20000
	done
	ok "nft back end: TPROXY to the outgoing listener (IPv4, IPv6)"
	nf up -B nft -F closed -n > "$TMP/nft.sh" || fail "up -B nft -F closed -n"
	sed 's/ queue num 0 bypass$//' "$TMP/nft.sh" | inb sh -e ||
		fail "nft back end, fail-closed rule set does not load"
	for dst in 192.0.2.10 2001:db8:2::10; do
		out=$(cconnect $dst 25 3); rc=$?
		[ $rc = 2 ] || fail "nft back end, fail-closed: $dst:25 $out, want a refusal (RST)"
	done
	ok "nft back end, fail-closed: unclassified SMTP refused (IPv4, IPv6)"
fi
nf down 2>"$TMP/err" || fail "down (nft back end): $(head -n1 "$TMP/err")"
snapshot "$TMP/s"
same "$TMP/s0" "$TMP/s" "down of the nft back end did not restore the box"
ok "nft back end: down restores the box"

echo "$T: PASS"
exit 0
