#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-workers-limits: with workers 2 (MXB_TEST_WORKERS) the per-client limit and
# the global session cap are one count across the workers, not one per
# worker.
#   - connections-per-client 3: c1 holds 3 idle sessions (to srv, the MTA
#     path) that sit on both workers (per-worker proxy_sessions: each
#     worker holds 1 or 2 of them; the kernel picks the worker, so the
#     test opens and closes until the three span both); then c1 opens 6
#     more: every one gets "421 4.7.0 ... Too many connections from your
#     address", each refusal is logged with open=3 (the shared count),
#     proxy_refused_per_client counts 6, proxy_sessions stays 3; after one
#     of the three is closed a new one is served again;
#   - reload to sessions 3 (no per-client limit): with the three held, a
#     new incoming connection and a new outgoing one (to the fake
#     upstream, which never sees it) get "421 4.3.2 ... too many
#     connections, try again later", logged limit=sessions open=3 max=3.
# Why this fails with a per-worker count: the three held sessions are
# split 2+1 (or 1+2) over two workers, so each worker holds fewer than 3
# of c1's sessions.  A per-worker table would admit each extra connection
# whichever worker takes it (banner 220 instead of 421) and log open=1 or
# open=2; so would a per-worker session cap.  Only one table shared by the
# workers refuses all of them with open=3.
. "$(dirname "$0")/t-workers-common.inc"


proxy_conf "limits {
	connections-per-client 3
}"
workers_up
hold_start
TB_ATEXIT=hold_stop

# hold3: c1 holds exactly 3 sessions to srv that span every worker (with
# 2 workers: 2+1 or 1+2), opening what is missing and, while they sit on
# one worker, letting the newest go and opening another.  Their IDs in H3.
H3=() NID=0
hold_one() {
	local id r
	NID=$((NID + 1))
	id=A$NID
	r=$(say "open $id $TB_SRV_IP4")
	expect_glob "held session $id (${#H3[@]} held before)" "$r" "220 gw.example.com *"
	H3+=("$id")
	sessions_are "${#H3[@]}"
}
hold3() {
	local try
	while [ "${#H3[@]}" -lt 3 ]; do hold_one; done
	for ((try = 1; try <= 40; try++)); do
		mxb_each_worker proxy_sessions -ge 1 && return 0
		expect_glob "quit ${H3[2]}" "$(say "quit ${H3[2]}")" "221 *"
		H3=("${H3[@]:0:2}")
		sessions_are 2
		hold_one
	done
	fail "40 connections did not put 3 sessions on $MXB_WORKERS workers: $(mxb_wshow proxy_sessions)"
}

# 1. connections-per-client 3 across the workers
hold3
note "held: $(mxb_wshow proxy_sessions)"
mxb_each_worker proxy_sessions -lt 3 || fail "a worker holds all 3: $(mxb_wshow proxy_sessions)"
refused0=$(mxb_stat proxy_refused_per_client) || fail "no proxy_refused_per_client in stats"
from=$(($(wc -l <"$TB_MXB_LOG") + 1))
for i in 1 2 3 4 5 6; do
	expect_glob "extra connection $i while 3 are held ($(mxb_wshow proxy_sessions))" \
		"$(say "open B$i $TB_SRV_IP4")" \
		"421 4.7.0 gw.example.com Too many connections from your address"
done
mxb_stats_expect proxy_refused_per_client -eq $((refused0 + 6))
sessions_are 3
n=$(tail -n "+$from" "$TB_MXB_LOG" | grep -Ec "client=$TB_C1_IP4:[0-9]+ dir=incoming limit=connections-per-client open=3( |\$)")
[ "$n" = 6 ] || fail "want 6 refusals logged with open=3, got $n: $(tail -n "+$from" "$TB_MXB_LOG" | grep -m2 'limit=')"
tail -n "+$from" "$TB_MXB_LOG" | grep -Eq "limit=connections-per-client open=[012]( |\$)" &&
	fail "a refusal counted fewer than 3 open: $(tail -n "+$from" "$TB_MXB_LOG" | grep -Em1 'open=[012]')"
# the refused connections were spread too (the accepted counters count
# every connection a worker took, refused or not)
mxb_each_worker proxy_accepted_incoming -ge 2 ||
	note "the refused ones all went to one worker: $(mxb_wshow proxy_accepted_incoming)"

# closing one lets one in again, whichever worker it was on
expect_glob "quit ${H3[0]}" "$(say "quit ${H3[0]}")" "221 *"
sessions_are 2
expect_glob "after one closed" "$(say "open C1 $TB_SRV_IP4")" "220 gw.example.com *"
sessions_are 3
expect_glob "then the fourth again" "$(say "open C2 $TB_SRV_IP4")" \
	"421 4.7.0 gw.example.com Too many connections from your address"
H3=("${H3[@]:1}" C1)

# 2. the global cap: sessions 3, reloaded into every worker
proxy_conf "limits {
	connections-per-client 0
	sessions 3
}"
mxb_reload
mxb_stats_expect proxy_sessions_max -eq 3
sessions_are 3
# C1 may have joined the other two on one worker: spread them again
hold3
note "held for the cap: $(mxb_wshow proxy_sessions)"
mxb_each_worker proxy_sessions -lt 3 || fail "a worker holds all 3: $(mxb_wshow proxy_sessions)"
fake_up
from=$(($(wc -l <"$TB_MXB_LOG") + 1))
for i in 1 2 3 4; do
	expect_glob "incoming $i over the cap ($(mxb_wshow proxy_sessions))" "$(say "open D$i $TB_SRV_IP4")" \
		"421 4.3.2 gw.example.com Error: too many connections, try again later"
	expect_glob "outgoing $i over the cap" "$(say "open E$i $FAKE_IP")" \
		"421 4.3.2 gw.example.com Error: too many connections, try again later"
done
n=$(tail -n "+$from" "$TB_MXB_LOG" | grep -Ec "client=$TB_C1_IP4:[0-9]+ dir=(incoming|outgoing) limit=sessions open=3 max=3")
[ "$n" = 8 ] || fail "want 8 cap refusals logged with open=3 max=3, got $n: $(tail -n "+$from" "$TB_MXB_LOG" | grep -m2 'limit=')"
[ "$(grep -c '^accept' "$S/fake.log")" = 0 ] ||
	fail "the upstream saw $(grep -c '^accept' "$S/fake.log") connections over the cap"
sessions_are 3

hold_stop
sessions_are 0
fake_down
mxb_down
pass "$MXB_WORKERS workers: 3 sessions of one client on both workers, 6 more refused 421 4.7.0 with open=3; sessions 3 refuses 421 4.3.2 both ways across workers"
