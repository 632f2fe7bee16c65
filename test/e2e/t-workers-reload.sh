#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-workers-reload: SIGHUP and SIGTERM with sessions open on every worker
# (workers 2, MXB_TEST_WORKERS; sessions from c1 to srv, the MTA path):
#   - SIGHUP with a new hostname (gw2.example.com) while every worker
#     holds a session in the middle of a transaction: "reload:
#     configuration=" is logged, each held session goes on and delivers
#     its message (250 at the dot, in alice's Maildir), and new sessions
#     greet with "220 gw2.example.com" on every worker (probes until each
#     worker's proxy_accepted_incoming moved);
#   - SIGTERM (shutdown-grace 20s) while every worker holds a session in
#     a transaction: the shutdown line counts all of them (sessions=N),
#     the daemon waits for them, each one's next command gets "421 4.3.2
#     gw2.example.com Service shutting down", then "shutdown: all sessions
#     finished", exit 0, well within the grace;
#   - restarted with shutdown-grace 2s, SIGTERM while every worker holds a
#     session nobody finishes: "shutdown: deadline reached, closing
#     sessions=N" (all of them), exit 0, the held sessions are closed.
. "$(dirname "$0")/t-workers-common.inc"

conf() {
	proxy_conf "shutdown-grace $2"
	sed -i "s/^hostname .*/hostname \"$1\"/" "$S/run.conf"
}
TXN=("EHLO c1.test.example" "MAIL FROM:<sender@example.org>" "RCPT TO:<alice@example.com>")
pid_now() { tr -dc 0-9 <"$TB_MXB_PIDFILE"; }
log_from() { tail -n "+$1" "$TB_MXB_LOG" | grep -Eq -- "$2"; }
# exit_status: wait until the daemon is gone; its exit status in RC
exit_status() {
	wait_for -t "$1" eval '! mxb_running' || fail "daemon still running $1 s after SIGTERM: $(tail -n 3 "$TB_MXB_LOG")"
	wait "$MXB_PID" 2>/dev/null
	RC=$?
	rm -f "$TB_MXB_PIDFILE"
}

conf gw.example.com 20s
workers_up
hold_start
TB_ATEXIT=hold_stop

# 1. SIGHUP with a session in a transaction on every worker
hold_every_worker H "$TB_SRV_IP4" "${TXN[@]}"
note "held for the reload: $NHELD ($(mxb_wshow proxy_sessions))"
conf gw2.example.com 20s
from=$(($(wc -l <"$TB_MXB_LOG") + 1))
kill -HUP "$(pid_now)" || fail "no daemon to SIGHUP"
wait_for log_from "$from" "reload: configuration=$S/run.conf" || fail "reload not logged: $(tail -n 3 "$TB_MXB_LOG")"
log_from "$from" "reload refused" && fail "reload refused: $(tail -n 3 "$TB_MXB_LOG")"
sessions_are "$NHELD"
for id in "${HELD[@]}"; do
	expect_glob "held session $id after the reload: the dot" "$(say "data $id workers-reload-$id")" "250 *"
	expect_glob "held session $id: QUIT" "$(say "quit $id")" "221 *"
done
for id in "${HELD[@]}"; do
	wait_for -t 30 mail_has "$TB_MAILDIR/alice" "workers-reload-$id" ||
		fail "the message of held session $id was not delivered"
done
sessions_are 0

# new sessions on every worker see the new hostname
base=()
while read -r w v; do base[w]=$v; done < <(mxb_wstats proxy_accepted_incoming)
total=$(mxb_stat proxy_accepted_incoming)
for ((n = 1; n <= 40; n++)); do
	expect_glob "new session $n after the reload" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw2.example.com *"
	total=$((total + 1))
	wait_for eval '[ "$(mxb_stat proxy_accepted_incoming)" = '"$total"' ]' ||
		fail "accepted count: want $total, $(mxb_stat proxy_accepted_incoming)"
	seen=1
	while read -r w v; do
		[ "$v" != - ] && [ "$v" -gt "${base[w]:-0}" ] || seen=
	done < <(mxb_wstats proxy_accepted_incoming)
	[ -n "$seen" ] && break
done
[ -n "$seen" ] || fail "40 new sessions did not reach every worker: $(mxb_wshow proxy_accepted_incoming)"
note "new sessions after the reload: $n ($(mxb_wshow proxy_accepted_incoming))"
sessions_are 0
wait_for eval '[ "$(mxb_stat queue_messages)" = 0 ]' || fail "queue not empty: $(mxb_stat queue_messages)"

# 2. SIGTERM, sessions in a transaction on every worker, which go on
hold_every_worker T "$TB_SRV_IP4" "${TXN[@]}"
note "held for SIGTERM: $NHELD ($(mxb_wshow proxy_sessions))"
from=$(($(wc -l <"$TB_MXB_LOG") + 1))
t0=$SECONDS
kill -TERM "$(pid_now)" || fail "no daemon to SIGTERM"
wait_for log_from "$from" "shutdown: signal=15 grace=20s sessions=" ||
	fail "no shutdown line: $(tail -n 3 "$TB_MXB_LOG")"
log_from "$from" "shutdown: signal=15 grace=20s sessions=$NHELD\$" ||
	fail "the shutdown does not count the $NHELD sessions of every worker: $(grep 'shutdown: signal' "$TB_MXB_LOG" | tail -n 1)"
mxb_running || fail "daemon gone with $NHELD sessions in a transaction: $(tail -n 3 "$TB_MXB_LOG")"
for id in "${HELD[@]}"; do
	expect_glob "held session $id after SIGTERM: its next command" "$(say "cmd $id DATA")" \
		"421 4.3.2 gw2.example.com Service shutting down"
done
exit_status 20
[ "$RC" = 0 ] || fail "exit status $RC after SIGTERM, want 0"
[ $((SECONDS - t0)) -lt 20 ] || fail "the drain took $((SECONDS - t0)) s, grace 20s"
log_from "$from" "shutdown: all sessions finished" || fail "not \"all sessions finished\": $(tail -n 3 "$TB_MXB_LOG")"
log_from "$from" "shutdown: deadline reached" && fail "deadline reached although every session finished"

# 3. restart with shutdown-grace 2s; sessions nobody finishes: the deadline
conf gw2.example.com 2s
workers_up restart
hold_every_worker K "$TB_SRV_IP4" "${TXN[@]}"
note "held for the deadline: $NHELD ($(mxb_wshow proxy_sessions))"
from=$(($(wc -l <"$TB_MXB_LOG") + 1))
kill -TERM "$(pid_now)" || fail "no daemon to SIGTERM"
wait_for log_from "$from" "shutdown: signal=15 grace=2s sessions=$NHELD\$" ||
	fail "the shutdown does not count the $NHELD sessions of every worker: $(tail -n 3 "$TB_MXB_LOG")"
exit_status 20
[ "$RC" = 0 ] || fail "exit status $RC after the deadline, want 0"
log_from "$from" "shutdown: deadline reached, closing sessions=$NHELD\$" ||
	fail "not the deadline for the $NHELD sessions: $(tail -n 3 "$TB_MXB_LOG")"
for id in "${HELD[@]}"; do
	expect_glob "held session $id after the deadline" "$(say "read $id")" "EOF" "ERROR *" "421 *"
done

hold_stop
mxb_sancheck
pass "$MXB_WORKERS workers: reload with sessions on every worker (held ones deliver, new ones see the new hostname on each worker); SIGTERM drains every worker (421 4.3.2 at the next command, exit 0), and the grace deadline closes every worker's sessions"
