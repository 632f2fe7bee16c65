#!/bin/bash
# t-daemon-restart: the pid file is decided by its lock, not by the pid in
# it (the daemon's pid file, in the testbed's box):
#   - kill -9, then restart at once while the killed daemon is still
#     unreaped (a zombie of this shell), twenty times: every restart
#     starts and serves (mxbridgectl status answers with its pid);
#   - a pid file naming a live unrelated process (a sleep of this test)
#     does not block a start, and is rewritten with the daemon's pid;
#   - a second instance while one runs is refused at once with "already
#     running: pid=N", exit 1, and leaves the pid file alone;
#   - detached (no -d), the lock survives the fork: a second instance is
#     refused naming the detached daemon's pid.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
S=$TB_STATE/restart
mxb_statedir "$S"
PF=$S/mxbridge.pid
SLEEPPID=
DETACHED=

cat >"$S/run.conf" <<CONF
hostname "gw.example.com"
spool "$S/spool"
pidfile "$PF"
control "$S/ctl.sock"
queue-number 8
workers ${MXB_WORKERS:-auto}
listen incoming port 10025
listen outgoing port 10026
CONF

ctl() { tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" "$@"; }
# serves PID: the control socket answers, from that very process
serves() { ctl status 2>/dev/null | grep -qx "pid=$1"; }
zombie() { grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# start: the daemon in the foreground in box, its pid in PID and
# $TB_MXB_PIDFILE (so the testbed's down stops it too).  Its parent is a
# python process that never reaps it (bash reaps its children at once):
# a killed daemon stays a zombie, its pid taken, until that parent goes.
REAPER_PY='
import os, sys, time
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % pid)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)
'
REAPERS=
start() {
	rm -f "$S/child.pid"
	ip netns exec "$(tb_ns box)" python3 -c "$REAPER_PY" "$S/child.pid" \
		"$BIN/mxbridge" -d -f "$S/run.conf" </dev/null >>"$TB_MXB_LOG" 2>&1 &
	REAPERS="$REAPERS $!"
	wait_for test -s "$S/child.pid" || fail "no daemon forked"
	PID=$(cat "$S/child.pid")
	echo "$PID" >"$TB_MXB_PIDFILE"
}
# reap: end the non-reaping parents (their zombies go with them)
reap() {
	local r
	for r in $REAPERS; do kill "$r" 2>/dev/null; wait "$r" 2>/dev/null; done
	REAPERS=
}
cleanup_extra() {
	reap
	[ -n "$SLEEPPID" ] && kill "$SLEEPPID" 2>/dev/null
	[ -n "$DETACHED" ] && kill -KILL "$DETACHED" 2>/dev/null
	wait 2>/dev/null
}
TB_ATEXIT=cleanup_extra

# 1. kill -9 and restart at once, twenty times
start
wait_for serves "$PID" || fail "first start: $(tail -n 3 "$TB_MXB_LOG")"
for i in $(seq 1 20); do
	old=$PID
	kill -KILL "$old"
	# dead but not reaped: its pid is still taken, as after a crash
	# whose parent is slow to reap
	wait_for zombie "$old" || fail "restart $i: killed daemon did not die"
	[ "$(tr -dc 0-9 <"$PF")" = "$old" ] || fail "restart $i: pid file does not name the killed daemon"
	start
	wait_for serves "$PID" ||
		fail "restart $i refused or not serving: $(tail -n 3 "$TB_MXB_LOG")"
	[ "$(tr -dc 0-9 <"$PF")" = "$PID" ] || fail "restart $i: pid file not rewritten"
	zombie "$old" || fail "restart $i: the killed daemon was reaped meanwhile (test broken)"
done
grep -q "already running" "$TB_MXB_LOG" && fail "a restart was refused: $(grep -m1 'already running' "$TB_MXB_LOG")"

# 2. a second instance while one runs: refused, clearly, pid file kept
out=$(timeout 10 ip netns exec "$(tb_ns box)" "$BIN/mxbridge" -d -f "$S/run.conf" 2>&1); rc=$?
[ $rc = 1 ] || fail "second instance: exit $rc, want 1: $out"
echo "$out" | grep -q "already running: pid=$PID pidfile=$PF" || fail "second instance: $out"
[ "$(tr -dc 0-9 <"$PF")" = "$PID" ] || fail "the refused instance touched the pid file"
serves "$PID" || fail "the first instance stopped serving"

# 3. a pid file naming a live unrelated process does not block a start
kill -TERM "$PID"
wait_for eval '! kill -0 "$PID" 2>/dev/null || zombie "$PID"' || fail "daemon did not stop on SIGTERM"
reap
[ ! -e "$PF" ] || fail "pid file left after SIGTERM"
sleep 300 &
SLEEPPID=$!
echo "$SLEEPPID" >"$PF"
start
wait_for serves "$PID" || fail "start blocked by a live unrelated pid: $(tail -n 3 "$TB_MXB_LOG")"
[ "$(tr -dc 0-9 <"$PF")" = "$PID" ] || fail "pid file not rewritten over the unrelated pid"
kill -0 "$SLEEPPID" || fail "the unrelated process is gone"
kill -TERM "$PID"
wait_for eval '! kill -0 "$PID" 2>/dev/null || zombie "$PID"' || fail "daemon did not stop on SIGTERM"
reap
rm -f "$TB_MXB_PIDFILE"

# 4. detached: the lock goes with the daemon through its fork
ip netns exec "$(tb_ns box)" "$BIN/mxbridge" -f "$S/run.conf" </dev/null >/dev/null 2>&1 ||
	fail "detached start failed"
wait_for eval '[ -s "$PF" ]' || fail "detached daemon wrote no pid file"
DETACHED=$(tr -dc 0-9 <"$PF")
wait_for serves "$DETACHED" || fail "detached daemon does not serve"
out=$(timeout 10 ip netns exec "$(tb_ns box)" "$BIN/mxbridge" -d -f "$S/run.conf" 2>&1) &&
	fail "second instance beside the detached one started"
echo "$out" | grep -q "already running: pid=$DETACHED " || fail "beside the detached one: $out"
kill -TERM "$DETACHED"
wait_for eval '! kill -0 "$DETACHED" 2>/dev/null || zombie "$DETACHED"' ||
	fail "detached daemon did not stop"
DETACHED=
wait_for eval '[ ! -e "$PF" ]' || fail "detached daemon left its pid file"

grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "kill -9 and restart x20, unrelated pid, second instance refused, lock through the fork"
