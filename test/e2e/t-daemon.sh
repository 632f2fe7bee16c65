#!/bin/bash
# t-daemon: the daemon skeleton on the testbed's appliance namespace:
# -V, -n (OK, the no-protected-domain warning, FILE:LINE errors, a
# missing '}' named by its block's line, a malformed address without
# DNS), pid file, mxbridgectl status, reload
# (accepted, and refused with the old config kept), a second instance
# refused, SIGTERM exits 0 and removes the pid file and control socket
# (in a folder of the daemon's user); systemd's notify socket hears
# READY=1 with MAINPID, RELOADING=1/READY=1 per reload, STOPPING=1.
. "$(dirname "$0")/../lib.sh"
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
S=$TB_STATE/daemon
mxb_statedir "$S"

write_conf() {	# FILE EXTRA-LINE
	cat >"$1" <<CONF
# daemon test
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number 7
listen incoming port 10025
listen outgoing port 10026
$2
CONF
	# last, so that the line numbers the -n checks expect stay
	echo "workers ${MXB_WORKERS:-auto}" >>"$1"
}
write_conf "$S/good.conf" ""
write_conf "$S/bad.conf" "frobnicate yes"

"$BIN/mxbridge" -V | grep -q '^mxbridge [0-9]' || fail "-V prints no version"
out=$("$BIN/mxbridge" -n -f "$S/good.conf" 2>"$S/n.err") || fail "-n on a good config: $out"
[ "$out" = "configuration OK" ] || fail "-n said: $out"
# good.conf protects nothing: OK, with a warning
grep -q "good.conf: no protected domain: every connection is outgoing$" "$S/n.err" ||
	fail "-n did not warn about no protected domain: $(cat "$S/n.err")"
: >"$S/empty.conf"
out=$("$BIN/mxbridge" -n -f "$S/empty.conf" 2>&1) || fail "-n on an empty file: $out"
echo "$out" | grep -q "no protected domain" || fail "-n on an empty file did not warn: $out"
write_conf "$S/dom.conf" 'domain "example.com" { server 192.0.2.10 }'
out=$("$BIN/mxbridge" -n -f "$S/dom.conf" 2>&1) || fail "-n with a domain: $out"
[ "$out" = "configuration OK" ] || fail "-n with a domain said: $out"
# a missing '}': the error names the line the block was opened on
write_conf "$S/brace.conf" 'domain "example.com" {
	server 192.0.2.10

queue { retry-min 1m }'
out=$("$BIN/mxbridge" -n -f "$S/brace.conf" 2>&1) && fail "-n accepted a missing '}'"
[ "$out" = "$S/brace.conf:12: unknown keyword \"queue\" in domain block opened at line 9 (missing '}'?)" ] ||
	fail "-n on a missing '}' said: $out"
# a malformed numeric address is reported as one, with no DNS at all
# (no network: a lookup would fail as "cannot resolve")
write_conf "$S/addr.conf" 'domain "example.com" { server 192.0.2.300 }'
out=$(unshare -n "$BIN/mxbridge" -n -f "$S/addr.conf" 2>&1) && fail "-n accepted 192.0.2.300"
[ "$out" = "$S/addr.conf:9: server: malformed address \"192.0.2.300\"" ] ||
	fail "-n on 192.0.2.300 said: $out"
out=$("$BIN/mxbridge" -n -f "$S/bad.conf" 2>&1) && fail "-n accepted an unknown keyword"
echo "$out" | grep -q "^$S/bad.conf:9: " || fail "-n error not FILE:LINE: $out"
out=$("$BIN/mxbridge" -n -f "$S/nonexistent.conf" 2>&1) && fail "-n accepted a missing file"
echo "$out" | grep -q "nonexistent.conf" || fail "missing file not named: $out"

# systemd's Type=notify: a datagram socket as systemd makes it (any user
# may send; the daemon connects to it before it drops to its user)
python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.settimeout(120)
with open(sys.argv[2], "w") as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", "|") + "\n")
        out.flush()
' "$S/notify" "$S/notify.out" 2>/dev/null &
npid=$!
wait_for test -S "$S/notify" || fail "no notify socket"

cp "$S/good.conf" "$S/run.conf"
export NOTIFY_SOCKET=$S/notify
mxb_start "$S/run.conf" || fail "daemon did not start"
unset NOTIFY_SOCKET
wait_for test -S "$S/ctl.sock" || fail "no control socket"
pid=$(cat "$TB_MXB_PIDFILE")
grep -q "no protected domain: every connection is outgoing" "$TB_MXB_LOG" ||
	fail "no warning at start about no protected domain"
[ "$(tr -dc 0-9 <"$S/mxbridge.pid")" = "$pid" ] || fail "pid file does not hold the daemon's pid"
wait_for grep -qx "READY=1|MAINPID=$pid" "$S/notify.out" ||
	fail "no READY=1 with MAINPID to systemd: $(cat "$S/notify.out")"

ctl() { tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" "$@"; }
st=$(ctl status) || fail "status failed"
echo "$st" | grep -q '^version=[0-9]' || fail "status lacks version: $st"
echo "$st" | grep -q '^uptime=[0-9]' || fail "status lacks uptime: $st"
echo "$st" | grep -q '^sessions=0$' || fail "status lacks sessions=0: $st"
# the control tool finds the socket through the config file too
tb_exec box "$BIN/mxbridgectl" -f "$S/run.conf" status | grep -q '^version=' ||
	fail "mxbridgectl -f did not reach the daemon"
ctl frobnicate >/dev/null 2>&1; [ $? -eq 1 ] || fail "unknown command not refused with 1"

# a broken config is refused on reload; the old one keeps serving
cp "$S/bad.conf" "$S/run.conf"
out=$(ctl reload 2>&1) && fail "reload of a broken config accepted"
echo "$out" | grep -q "run.conf:9" || fail "reload refusal lacks FILE:LINE: $out"
kill -HUP "$pid"
wait_for grep -q "reload refused" "$TB_MXB_LOG" || fail "SIGHUP refusal not logged"
mxb_running || fail "daemon died on a broken reload"
ctl status >/dev/null || fail "status after refused reload"
cp "$S/good.conf" "$S/run.conf"
ctl reload >/dev/null || fail "reload of a good config refused"
# every reload (refused ones too) is RELOADING=1, then READY=1 again
[ "$(grep -c '^RELOADING=1$' "$S/notify.out")" -ge 2 ] &&
	[ "$(grep -cx 'READY=1' "$S/notify.out")" -ge 2 ] &&
	[ "$(tail -n 1 "$S/notify.out")" = "READY=1" ] ||
	fail "reloads not told to systemd: $(cat "$S/notify.out")"

# a second instance with the same pid file does not start
tb_exec box "$BIN/mxbridge" -d -f "$S/run.conf" >"$S/second.log" 2>&1 &&
	fail "second instance started"
grep -q "already running" "$S/second.log" || fail "second instance: $(cat "$S/second.log")"

kill -TERM "$pid"
wait "$pid" 2>/dev/null; rc=$?
[ "$rc" -eq 0 ] || fail "SIGTERM exit status $rc: $(tail -n 5 "$TB_MXB_LOG")"
[ ! -e "$S/mxbridge.pid" ] || fail "pid file left behind"
[ ! -e "$S/ctl.sock" ] || fail "control socket left behind"
grep -q "stopped" "$TB_MXB_LOG" || fail "no stop logged"
grep -qx "STOPPING=1" "$S/notify.out" || fail "no STOPPING=1 to systemd: $(cat "$S/notify.out")"
kill "$npid" 2>/dev/null
rm -f "$TB_MXB_PIDFILE"
pass "flags, status, reload, single instance, graceful stop"
