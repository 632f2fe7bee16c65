#!/bin/bash
# t-mta-rate: "destination NAME { rate 5 per 2s }" under a burst.  15
# messages reach the MTA at once for the relay host (test/fakesmtp.py,
# relay.example.org port 2525):
#   - the daemon's own clock: no 2-second window holds more than 5
#     transaction starts (its "rate ... start=MS" lines, exact);
#   - the relay host: nothing past 5 before 2 s from the burst, past 10
#     before 4 s (every start is after the burst began, so a count read
#     before then can only be that low: load cannot make it higher);
#   - all 15 arrive (within 30 s), none deferred, and the hold is logged
#     once: "destination=... rate=5/2s held=K"; "mxbridgectl stats"
#     counts the waiting ones in queue_rate_held meanwhile.
. "$(dirname "$0")/t-mta-common.inc"
PORT=2525
N=15

TB_ATEXIT=fake_smtp_stop
fake_smtp plain - - "$S/fake.log" "$PORT"

mta_conf "relay-host relay.example.org port $PORT
destination \"relay.example.org\" {
	rate 5 per 2s
}"
mta_up

now_ms() { date +%s%3N; }
msgs() { grep -c " MSG rate " "$S/fake.log"; }

t0=$(now_ms)
tb_exec c1 python3 -c '
import smtplib, sys
srv, n = sys.argv[1], int(sys.argv[2])
s = smtplib.SMTP(srv, 25, timeout=60)
for k in range(n):
    s.sendmail("sender@example.org", ["rcpt@example.net"],
               "Subject: rate %d\r\n\r\nbody %d\r\n" % (k, k))
s.quit()
' "$TB_EXT_IP4" "$N" >"$S/burst.out" 2>&1 &
sender=$!

# sample the relay host's count: the count first, then the clock, so a
# sample's time is never before the count it read
: >"$S/samples"
end=$((t0 + 30000))
rheld=0
while :; do
	c=$(msgs)
	t=$(now_ms)
	echo "$((t - t0)) $c" >>"$S/samples"
	# once the hold began, until the last one is through: stats counts
	# what waits (a slow start under a sanitizer may miss the first
	# window, never all of them)
	if [ "$c" -lt $N ] && log_has "rate=5/2s held="; then
		r=$(stat_is queue_rate_held)
		[ "${r:-0}" -gt "$rheld" ] && rheld=$r
	fi
	[ "$c" -ge $N ] && break
	[ "$t" -lt $end ] || break
	sleep 0.05
done
wait "$sender" || fail "burst not accepted: $(tail -n 3 "$S/burst.out")"
[ "$(msgs)" -eq $N ] || fail "$(msgs) of $N messages at the relay host in 30 s: $(grep 'destination=' "$TB_MXB_LOG" | tail -n 3)"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list | head -n 3)"

bad=$(awk '($1 < 2000 && $2 > 5) || ($1 < 4000 && $2 > 10)' "$S/samples" | head -n 1)
[ -z "$bad" ] || fail "at ms count \"$bad\" from the burst: rate 5 per 2s not kept at the relay host"

# the daemon's window clock: start i+5 at least 2000 ms after start i
sed -n 's/.* destination=relayhost:relay.example.org:[0-9]* rate=5\/2s start=\([0-9]*\)$/\1/p' \
	"$TB_MXB_LOG" >"$S/starts"
[ "$(wc -l <"$S/starts")" -eq $N ] || fail "$(wc -l <"$S/starts") rate start lines for $N messages"
gap=$(awk '{ t[NR] = $1 } END { m = -1; for (i = 1; i + 5 <= NR; i++)
	if (m < 0 || t[i + 5] - t[i] < m) m = t[i + 5] - t[i]; print m }' "$S/starts")
[ "$gap" -ge 2000 ] || fail "6 starts within ${gap} ms (rate 5 per 2s)"

held=$(grep -c "destination=relayhost:relay.example.org:$PORT rate=5/2s held=" "$TB_MXB_LOG")
[ "$held" -ge 1 ] || fail "the hold was not logged"
[ "$held" -le 2 ] || fail "the hold logged $held times for one backlog"
[ "$rheld" -ge 1 ] || fail "stats queue_rate_held never above 0 during the hold"
[ "$(stat_is queue_rate_held)" = 0 ] || fail "stats queue_rate_held $(stat_is queue_rate_held) with the queue empty"
log_has "disposition=deferred" && fail "a message was deferred: $(grep -m1 disposition=deferred "$TB_MXB_LOG")"
span=$(awk 'END { print $1 }' "$S/samples")

fake_smtp_stop
mta_down
pass "$N messages in ${span} ms, at least ${gap} ms between a start and the fifth after it, the hold logged $held time(s), up to $rheld in queue_rate_held"
