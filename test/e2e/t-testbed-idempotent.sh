#!/usr/bin/env bash
# shellcheck disable=SC2119,SC2317
# testbed.sh: up twice, down twice, repair of a broken testbed, two testbeds
# side by side, and nothing left behind after down.
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
need ip python3 postfix smtp-sink dnsmasq ss
unset MXB_TB_DIR

A=mxbi$$a
B=mxbi$$b
TB=$TB_SCRIPT
export TBD_QUIET=1
cleanup() {
	local rc=$?
	bash "$TB" down "$A" >/dev/null 2>&1
	bash "$TB" down "$B" >/dev/null 2>&1
	rm -rf "/tmp/mxbi-pids-$$"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# a pid is gone (zombies awaiting their reaper count as gone)
pid_gone() {
	[ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
# save NAME: copy its pid files (they vanish with the state dir)
save_pids() {
	mkdir -p "/tmp/mxbi-pids-$$/$1"
	cp /tmp/mxbtb-"$1"/pids/*.pid "/tmp/mxbi-pids-$$/$1/" || fail "no pid files for $1"
}
pids_of() { cat "/tmp/mxbi-pids-$$/$1"/*.pid | tr -dc '0-9\n'; }
# gone NAME: nothing of testbed NAME is left
gone() {
	local n=$1 p
	ip netns list | grep -q "^$n-" && fail "namespaces of $n left: $(ip netns list | grep "^$n-" | tr '\n' ' ')"
	[ ! -e "/tmp/mxbtb-$n" ] || fail "state dir of $n left"
	[ ! -e "/etc/netns/$n-box" ] || fail "/etc/netns/$n-box left"
	for p in $(pids_of "$n"); do
		wait_for -t 3 pid_gone "$p" || fail "process $p of $n still alive: $(tr '\0' ' ' <"/proc/$p/cmdline")"
	done
}
all_alive() {
	local p
	for p in $(pids_of "$1"); do pid_gone "$p" && return 1; done
	return 0
}

# two testbeds come up at the same time
bash "$TB" up "$A" >/tmp/mxbi-$$-a.log 2>&1 & pa=$!
bash "$TB" up "$B" >/tmp/mxbi-$$-b.log 2>&1 & pb=$!
wait $pa; ra=$?; wait $pb; rb=$?
why=$(cat /tmp/mxbi-$$-a.log /tmp/mxbi-$$-b.log | grep -m1 error); rm -f /tmp/mxbi-$$-[ab].log
[ $ra = 0 ] || fail "up $A failed: $why"
[ $rb = 0 ] || fail "up $B failed: $why"
bash "$TB" status "$A" >/dev/null || fail "status $A not up"
bash "$TB" status "$B" >/dev/null || fail "status $B not up"
save_pids "$A"
save_pids "$B"

# up again: no-op on a healthy testbed (same daemons)
bash "$TB" up "$A" >/dev/null 2>&1 || fail "second up $A failed"
for f in /tmp/mxbtb-"$A"/pids/*.pid; do
	cmp -s "$f" "/tmp/mxbi-pids-$$/$A/${f##*/}" || fail "second up restarted ${f##*/}"
done
all_alive "$A" || fail "a daemon of $A died on the second up"

# the state is per testbed: both Postfix instances deliver on their own
tb_use "$A"
tb_smtp_send c1 "$TB_SRV_IP4" s@example.org bob@example.com || fail "send in $A failed"
wait_for maildir_count bob -ge 1 || fail "not delivered in $A"
tb_use "$B"
[ "$(maildir_count bob)" = 0 ] || fail "mail of $A showed up in $B"

# a broken testbed is repaired by up: kill B's mx21 sink
kill "$(cat /tmp/mxbtb-"$B"/pids/out.sink-mx21.pid)"
# shellcheck disable=SC2016
wait_for -t 3 eval '! bash "$TB" status "$B"' || fail "status $B did not notice a dead sink"
bash "$TB" up "$B" >/dev/null 2>&1 || fail "repairing up $B failed"
bash "$TB" status "$B" >/dev/null || fail "status $B not up after repair"
save_pids "$B"

# down twice; the other testbed is untouched
bash "$TB" down "$A" >/dev/null 2>&1 || fail "down $A failed"
bash "$TB" down "$A" >/dev/null 2>&1 || fail "second down $A failed"
gone "$A"
all_alive "$B" || fail "down $A hurt $B"
bash "$TB" status "$B" >/dev/null || fail "status $B not up after down $A"
bash "$TB" down "$B" >/dev/null 2>&1 || fail "down $B failed"
bash "$TB" down "$B" >/dev/null 2>&1 || fail "second down $B failed"
gone "$B"
bash "$TB" status "$B" >/dev/null 2>&1 && fail "status says up after down"

pass "up/up, down/down, repair, two testbeds side by side, nothing left"
