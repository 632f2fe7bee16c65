#!/bin/bash
# t-feature-connlimit: connection limits per client address.
#   - connections-per-client 2: two concurrent sessions get their
#     greeting, the third "421 4.7.0 ... Too many connections from your
#     address" and is closed; on a live relay the refused one never
#     reaches the upstream; once one closes, a new one is let in;
#   - connection-rate 3 per 1m: three sequential connections go through,
#     the fourth gets the same 421;
#   - the refusals are counted in "mxbridgectl stats" and logged.
. "$(dirname "$0")/t-proxy-common.inc"

# limits_conf LINES: the daemon config with a limits block
limits_conf() {
	proxy_conf "limits {
$1
}"
}
# idle: wait until the daemon has closed every session
idle() {
	wait_for eval 'mxb_ctl stats | grep -qx "proxy_sessions=0"' || fail "sessions did not close"
}

# conns HOST N HOLD [seq]: N connections from c1 to HOST:25, the first
# line of each on "I <line>" (EOF, RESET ...); held open together for HOLD
# seconds, or with seq each closed (QUIT) before the next is opened
conns() {
	tb_exec c1 python3 -c '
import socket, sys, time
host, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
seq = len(sys.argv) > 4
held = []
for i in range(n):
    try:
        s = socket.create_connection((host, 25), timeout=10)
        data = b""
        while b"\n" not in data:
            d = s.recv(512)
            if not d:
                break
            data += d
        line = data.decode(errors="replace").splitlines()[0] if data else "EOF"
    except OSError as e:
        line = "ERROR %s" % e
    print("%d %s" % (i, line), flush=True)
    if seq:
        try:
            s.sendall(b"QUIT\r\n"); s.recv(512)
        except OSError:
            pass
        s.close()
    else:
        held.append(s)
time.sleep(hold)
' "$@"
}

# 1. connections-per-client 2, MTA path (incoming)
limits_conf "connections-per-client 2"
proxy_up
conns "$TB_SRV_IP4" 3 0 >"$S/c.out" 2>&1 || fail "client failed: $(cat "$S/c.out")"
grep -q "^0 220 gw.example.com" "$S/c.out" || fail "first connection: $(cat "$S/c.out")"
grep -q "^1 220 gw.example.com" "$S/c.out" || fail "second connection: $(cat "$S/c.out")"
grep -q "^2 421 4.7.0 gw.example.com Too many connections from your address" "$S/c.out" ||
	fail "third connection not refused: $(cat "$S/c.out")"
log_has "client=$TB_C1_IP4:[0-9]+ dir=incoming limit=connections-per-client open=2" ||
	fail "refusal not logged"
log_has "disposition=connections-per-client" || fail "refused session's end not logged"

# closed sessions are counted down: two at once again, each time
for round in 1 2; do
	idle
	conns "$TB_SRV_IP4" 2 0 >"$S/c.out" 2>&1
	[ "$(grep -c "220 gw.example.com" "$S/c.out")" = 2 ] ||
		fail "round $round after closing: $(cat "$S/c.out")"
done

# 2. the live relay: the refused connection never reaches the upstream
fake_up
idle
conns "$FAKE_IP" 3 1 >"$S/c.out" 2>&1
[ "$(grep -c "220 fake.upstream" "$S/c.out")" = 2 ] || fail "live relay: $(cat "$S/c.out")"
grep -q "^2 421 4.7.0 gw.example.com Too many connections" "$S/c.out" ||
	fail "live relay: third connection not refused: $(cat "$S/c.out")"
sleep 0.5
[ "$(grep -c '^accept' "$S/fake.log")" = 2 ] || fail "the upstream saw $(grep -c '^accept' "$S/fake.log") connections, want 2"
fake_down

# 3. connection-rate 3 per 1m
limits_conf "connections-per-client 0
connection-rate 3 per 1m"
mxb_reload
idle
conns "$TB_SRV_IP4" 4 0 seq >"$S/c.out" 2>&1 || fail "client failed: $(cat "$S/c.out")"
[ "$(grep -c "220 gw.example.com" "$S/c.out")" = 3 ] || fail "rate: $(cat "$S/c.out")"
grep -q "^3 421 4.7.0 gw.example.com Too many connections from your address" "$S/c.out" ||
	fail "fourth connection within the minute not refused: $(cat "$S/c.out")"
log_has "limit=connection-rate" || fail "rate refusal not logged"
# another client has its own count
expect_glob "c2 to srv" "$(tb_banner c2 "$TB_SRV_IP4")" "BANNER 220 gw.example.com*"

mxb_stats_expect proxy_refused_per_client -ge 2 proxy_refused_rate -ge 1

mxb_down
pass "connection limits: 421 over connections-per-client and connection-rate, counted down on close"
