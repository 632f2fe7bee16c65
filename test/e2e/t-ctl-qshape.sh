#!/bin/bash
# t-ctl-qshape: "mxbridgectl queue summary [sender]", qshape's table of
# the queue, against a queue whose state the test sets up:
#   - Postfix stopped: four recipients of three messages in two
#     protected domains are deferred, all in the "5" column, the domain
#     with more first, TOTAL on top, the active table empty;
#   - two messages made older in their spool files (30 min, 3 h) and the
#     daemon restarted: they move to the "40" and "320" columns, by
#     recipient domain and by sender domain;
#   - a server that takes the connection and never greets: after a
#     flush every recipient is in a delivery attempt, so "active";
#   - "queue summary bogus" is refused (exit 1).
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
domain \"example.net\" {
	server mx.example.com port 25
}"
mta_up

tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"

ids=()
for m in "a@example.org alice@example.com,bob@example.com" \
	"b@example.org carol@example.net" "c@example.edu alice@example.com"; do
	set -- $m
	send c1 "$TB_SRV_IP4" "$1" "$2" "t-ctl-qshape $1" ||
		fail "not queued: $(cat "$S/send.out")"
	ids+=("$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")")
done
[ "${#ids[@]}" = 3 ] && [ -n "${ids[2]}" ] || fail "queue ids: ${ids[*]}"

# row TABLE NAME [sender]: the counts of NAME's row in the active or the
# deferred table, "T 5 10 ... 1280+"
row() {
	ctl queue summary ${3:-} | awk -v t="$1" -v n="$2" '
		$1 == "active" || $1 == "deferred" { cur = $1; next }
		cur == t && $1 == n { $1 = ""; sub(/^ /, ""); print }'
}
# summary_is TABLE NAME COUNTS [sender]: wait for that row (a retry may
# hold a recipient "active" for a moment)
summary_is() {
	wait_for eval '[ "$(row "$1" "$2" "${4:-}")" = "$3" ]' ||
		fail "queue summary ${4:-}: $1 $2 is \"$(row "$1" "$2" "${4:-}")\", not \"$3\":
$(ctl queue summary ${4:-})"
}

wait_for -t 15 eval '[ "$(ctl queue list | grep -c "state=pending .*attempts=[1-9]")" = 4 ]' ||
	fail "not every recipient deferred: $(ctl queue list)"
out=$(ctl queue summary) || fail "queue summary failed: $out"
echo "$out" | head -n 2 | tail -n 1 | grep -Eq '^ +T +5 +10 +20 +40 +80 +160 +320 +640 +1280 +1280\+$' ||
	fail "no qshape header: $out"
summary_is deferred TOTAL "4 4 0 0 0 0 0 0 0 0 0"
summary_is deferred example.com "3 3 0 0 0 0 0 0 0 0 0"
summary_is deferred example.net "1 1 0 0 0 0 0 0 0 0 0"
summary_is active TOTAL "0 0 0 0 0 0 0 0 0 0 0"
# the larger row first
out=$(ctl queue summary)
[ "$(echo "$out" | awk '$1 ~ /^example\./ { print $1 }' | tr '\n' ' ')" = "example.com example.net " ] ||
	fail "rows not by total: $out"
summary_is deferred example.org "2 2 0 0 0 0 0 0 0 0 0" sender
summary_is deferred example.edu "1 1 0 0 0 0 0 0 0 0 0" sender

# older messages: the arrival in the spool file
mta_down
spool_age "${ids[1]}" 30
spool_age "${ids[2]}" 180
mta_up
wait_for -t 15 eval '[ "$(ctl queue list | grep -c "state=pending")" = 4 ]' ||
	fail "the aged messages did not load: $(ctl queue list; grep -i corrupt "$TB_MXB_LOG")"
summary_is deferred TOTAL "4 2 0 0 1 0 0 1 0 0 0"
summary_is deferred example.com "3 2 0 0 0 0 0 1 0 0 0"
summary_is deferred example.net "1 0 0 0 1 0 0 0 0 0 0"
summary_is deferred TOTAL "3 1 0 0 1 0 0 1 0 0 0" sender
summary_is deferred example.org "2 1 0 0 1 0 0 0 0 0 0" sender
summary_is deferred example.edu "1 0 0 0 0 0 0 1 0 0 0" sender

# a server that never greets: the attempts hang, the recipients are active
# (ip netns exec, not the tb_exec function: $! must be python's own pid)
ip netns exec "$(tb_ns srv)" python3 -c '
import socket, time
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 25)); s.listen(64)
held = []
while True:
    held.append(s.accept()[0])
' >/dev/null 2>&1 &
HANG=$!
TB_ATEXIT="kill $HANG 2>/dev/null"
wait_for tbd_listening_tcp srv ":25" 25 || fail "the silent server is not listening"
ctl queue flush >/dev/null || fail "queue flush failed"
summary_is active TOTAL "4 2 0 0 1 0 0 1 0 0 0"
summary_is active example.com "3 2 0 0 0 0 0 1 0 0 0"
summary_is deferred TOTAL "0 0 0 0 0 0 0 0 0 0 0"
summary_is active TOTAL "3 1 0 0 1 0 0 1 0 0 0" sender
ctl queue list | grep -q "state=delivering" || fail "queue list does not say delivering"
kill "$HANG" 2>/dev/null; wait "$HANG" 2>/dev/null

out=$(ctl queue summary bogus 2>&1) && fail "queue summary bogus succeeded: $out"
echo "$out" | grep -q "usage: queue summary \[sender\]" || fail "no usage: $out"
mta_down
pass "deferred and active recipients by domain and age, by sender domain"
