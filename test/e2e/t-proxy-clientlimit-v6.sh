#!/bin/bash
# t-proxy-clientlimit-v6: the per-client limits count a client group, not
# an address, and a global cap bounds the sessions.
#   - 2000 addresses of c1's /64 (2001:db8:2::1:0/112, added to c1's
#     eth0): with connections-per-client 5 and the default
#     client-ipv6-prefix 64 the first 5 get their greeting, every other
#     one "421 4.7.0 ... Too many connections from your address", logged
#     with group=2001:db8:2::/64; c1's own address is refused too, its
#     IPv4 address is another client; after the 5 close a new one is let in;
#   - client-ipv6-prefix 128: 20 addresses are 20 clients, all served;
#     client-ipv4-prefix 24: c2 is refused while c1 holds 5 over IPv4;
#   - sessions 3, both directions together: two incoming sessions and one
#     live relay (outgoing) are served, the fourth connection, from
#     another address, gets "421 4.3.2 ... too many connections, try
#     again later" (logged limit=sessions), and so does an outgoing one,
#     which never reaches the upstream; after one closes a new one is
#     served.
. "$(dirname "$0")/t-proxy-common.inc"

NADDR=2000
NET6=2001:db8:2::1:			# c1's extra addresses: NET6<hex>

# conf LINES: the daemon config; the srv's IPv6 address protected too, so
# that the box itself answers there (the MTA path)
conf() {
	proxy_conf "domain \"example.org\" {
	server $TB_SRV_IP6 port 25
}
limits {
$1
}"
}

# idle: wait until the daemon has closed every session
idle() {
	wait_for eval 'mxb_ctl stats | grep -qx "proxy_sessions=0"' ||
		fail "sessions did not close: $(mxb_ctl stats | grep proxy_sessions=)"
}
sessions_are() {
	wait_for eval "mxb_ctl stats | grep -qx 'proxy_sessions=$1'" ||
		fail "want $1 sessions: $(mxb_ctl stats | grep proxy_sessions=)"
}

# the client in c1, driven line by line on stdin:
#   open ID SRC HOST  connect from SRC ("-": any) to HOST:25, answer
#                     "ID <first line>" (or EOF / ERROR ...), keep it open
#   close ID          QUIT, read to EOF, answer "closed ID"
#   many PFX N HOST   open N connections from PFX<hex i>, keep the 220s,
#                     close the rest; answer "many ok=A refused=B other=C
#                     first_refused=I"
CLIENT_PY='
import socket, sys
host_conns = {}
def one(src, host):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(20)
    try:
        if src != "-":
            s.bind((src, 0))
        s.connect((host, 25))
        data = b""
        while b"\n" not in data:
            d = s.recv(512)
            if not d:
                break
            data += d
        line = data.decode(errors="replace").splitlines()[0] if data else "EOF"
    except OSError as e:
        line = "ERROR %s" % e
    return s, line
def quit(s):
    try:
        s.sendall(b"QUIT\r\n")
        while s.recv(512):
            pass
    except OSError:
        pass
    s.close()
for cmd in sys.stdin:
    w = cmd.split()
    if not w:
        continue
    if w[0] == "open":
        s, line = one(w[2], w[3])
        host_conns[w[1]] = s
        print("%s %s" % (w[1], line), flush=True)
    elif w[0] == "close":
        quit(host_conns.pop(w[1]))
        print("closed %s" % w[1], flush=True)
    elif w[0] == "many":
        ok = refused = other = 0
        first = -1
        for i in range(int(w[2])):
            s, line = one("%s%x" % (w[1], i), w[3])
            if line.startswith("220 "):
                ok += 1
                host_conns["m%d" % i] = s
                continue
            if line.startswith("421 4.7.0 ") and "Too many connections from your address" in line:
                refused += 1
                if first < 0:
                    first = i
            else:
                other += 1
                print("# %d: %s" % (i, line), file=sys.stderr, flush=True)
            s.close()
        print("many ok=%d refused=%d other=%d first_refused=%d" % (ok, refused, other, first), flush=True)
    elif w[0] == "closeall":
        for k in list(host_conns):
            quit(host_conns.pop(k))
        print("closed all", flush=True)
'

# client_start / client_stop: the client coprocess; say CMD: its answer
client_start() {
	coproc CL { ip netns exec "$(tb_ns c1)" python3 -u -c "$CLIENT_PY" 2>>"$S/client.err"; }
	CL_PID=$CL_PID
	tbd_record_pid c1 climit "$CL_PID"
}
client_stop() {
	[ -n "${CL_PID:-}" ] || return 0
	echo closeall >&"${CL[1]}" 2>/dev/null
	kill "$CL_PID" 2>/dev/null
	wait "$CL_PID" 2>/dev/null
	CL_PID=
}
say() {
	local line
	echo "$1" >&"${CL[1]}" || fail "client gone: $(tail -n 3 "$S/client.err")"
	read -r -t 240 line <&"${CL[0]}" || fail "no answer to \"$1\": $(tail -n 3 "$S/client.err")"
	echo "$line"
}

# 2000 addresses of one /64 on c1 (nodad: usable at once)
for ((i = 0; i < NADDR; i++)); do
	printf 'address add %s%x/64 dev eth0 nodad\n' "$NET6" "$i"
done >"$S/addrs.batch"
ip -n "$(tb_ns c1)" -batch "$S/addrs.batch" || fail "could not add c1's addresses"
[ "$(ip -n "$(tb_ns c1)" -6 addr show dev eth0 | grep -c "inet6 $NET6")" = "$NADDR" ] ||
	fail "c1 lacks its $NADDR addresses"

# 1. one /64 is one client: 5 served, the other 1995 refused
conf "connections-per-client 5"
proxy_up
client_start
r=$(say "many $NET6 $NADDR $TB_SRV_IP6")
note "$NADDR addresses of one /64: $r"
[ "$r" = "many ok=5 refused=$((NADDR - 5)) other=0 first_refused=5" ] ||
	fail "one /64 is not one client: $r ($(tail -n 3 "$S/client.err"))"
log_has "client=\[${NET6}5\]:[0-9]+ dir=incoming limit=connections-per-client open=5 group=2001:db8:2::/64" ||
	fail "refusal not logged with the client's group"
mxb_stats_expect proxy_refused_per_client -eq $((NADDR - 5)) proxy_clients -le 2
# c1's own address is in the /64; its IPv4 address is another client
expect_glob "c1's own address" "$(say "open own $TB_C1_IP6 $TB_SRV_IP6")" \
	"own 421 4.7.0 gw.example.com Too many connections from your address"
expect_glob "c1 over IPv4" "$(say "open v4 $TB_C1_IP4 $TB_SRV_IP4")" "v4 220 gw.example.com*"
# closed sessions count down
[ "$(say closeall)" = "closed all" ] || fail "client: closeall"
idle
expect_glob "after closing" "$(say "open again ${NET6}7cf $TB_SRV_IP6")" "again 220 gw.example.com*"
[ "$(say closeall)" = "closed all" ] || fail "client: closeall"
idle

# 2. client-ipv6-prefix 128: every address a client; client-ipv4-prefix
# 24: c1 and c2 are one
conf "connections-per-client 5
client-ipv6-prefix 128
client-ipv4-prefix 24"
mxb_reload
r=$(say "many $NET6 20 $TB_SRV_IP6")
[ "$r" = "many ok=20 refused=0 other=0 first_refused=-1" ] ||
	fail "client-ipv6-prefix 128: $r"
for i in 1 2 3 4 5; do
	expect_glob "c1 IPv4 $i" "$(say "open v4$i $TB_C1_IP4 $TB_SRV_IP4")" "v4$i 220 gw.example.com*"
done
expect_glob "c2 in c1's /24" "$(tb_banner c2 "$TB_SRV_IP4")" \
	"BANNER 421 4.7.0 gw.example.com Too many connections from your address*"
log_has "dir=incoming limit=connections-per-client open=5 group=192.0.2.0/24" ||
	fail "IPv4 refusal not logged with the /24"
[ "$(say closeall)" = "closed all" ] || fail "client: closeall"
idle

# 3. sessions 3, both directions together
conf "connections-per-client 0
sessions 3"
mxb_reload
fake_up
mxb_stats_expect proxy_sessions_max -eq 3
expect_glob "A" "$(say "open A ${NET6}a $TB_SRV_IP6")" "A 220 gw.example.com*"
expect_glob "B" "$(say "open B ${NET6}b $TB_SRV_IP6")" "B 220 gw.example.com*"
expect_glob "C, outgoing" "$(say "open C $TB_C1_IP4 $FAKE_IP")" "C 220 fake.upstream*"
expect_glob "D, over the cap" "$(say "open D ${NET6}d $TB_SRV_IP6")" \
	"D 421 4.3.2 gw.example.com Error: too many connections, try again later"
log_has "client=\[${NET6}d\]:[0-9]+ dir=incoming limit=sessions open=3 max=3" ||
	fail "cap refusal not logged"
expect_glob "F, outgoing over the cap" "$(say "open F $TB_C1_IP4 $FAKE_IP")" \
	"F 421 4.3.2 gw.example.com Error: too many connections, try again later"
[ "$(say "close A")" = "closed A" ] || fail "client: close A"
sessions_are 2
expect_glob "E, after one closed" "$(say "open E ${NET6}e $TB_SRV_IP6")" "E 220 gw.example.com*"
mxb_stats_expect proxy_refused_sessions -eq 2
[ "$(grep -c '^accept' "$S/fake.log")" = 1 ] ||
	fail "the upstream saw $(grep -c '^accept' "$S/fake.log") connections, want 1"
client_stop
fake_down

mxb_down
pass "one /64 is one client ($NADDR addresses, 5 served), client-ipv6-prefix 128, sessions cap 421 4.3.2 both directions"
