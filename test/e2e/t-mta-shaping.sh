#!/bin/bash
# t-mta-shaping: "destination NAME { concurrency; messages-per-connection;
# recipients-per-message }" under a burst.  200 messages (the last one to
# 5 recipients) reach the MTA at once over four client sessions; the
# relay host (test/fakesmtp.py, relay.example.org port 2525) counts the
# connections open at once and what each one carried:
#   - never 3 connections at once (concurrency 2), and 2 were used;
#   - no connection carried more than 10 messages;
#   - the 5 recipients went as 3 transactions of at most 2;
#   - every message arrived.
. "$(dirname "$0")/t-mta-common.inc"
PORT=2525
N=200

TB_ATEXIT=fake_smtp_stop
fake_smtp plain - - "$S/fake.log" "$PORT"

mta_conf "relay-host relay.example.org port $PORT
destination \"relay.example.org\" {
	concurrency 2
	messages-per-connection 10
	recipients-per-message 2
}"
mta_up

# the burst: four sessions of 50 messages each, at once
tb_exec c1 python3 -c '
import smtplib, sys, threading
srv, n = sys.argv[1], int(sys.argv[2])
errs = []
def run(t):
    try:
        s = smtplib.SMTP(srv, 25, timeout=60)
        for i in range(n // 4):
            k = t * (n // 4) + i
            to = ["rcpt@example.net"] if k != n - 1 else \
                ["r%d@example.net" % j for j in range(5)]
            s.sendmail("sender@example.org", to,
                       "Subject: burst %d\r\n\r\nbody %d\r\n" % (k, k))
        s.quit()
    except Exception as e:
        errs.append(repr(e))
ts = [threading.Thread(target=run, args=(t,)) for t in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
if errs:
    print("\n".join(errs)); sys.exit(1)
' "$TB_EXT_IP4" "$N" >"$S/burst.out" 2>&1 || fail "burst not accepted: $(tail -n 3 "$S/burst.out")"

msgs() { grep -c " MSG burst " "$S/fake.log"; }
# the last one goes as 3 transactions: N - 1 + 3 in all
wait_for -t 120 eval '[ "$(msgs)" -ge $((N + 2)) ]' ||
	fail "$(msgs) of $((N + 2)) transactions at the relay host: $(grep 'mta:' "$TB_MXB_LOG" | tail -n 3)"
wait_for -t 10 queue_empty || fail "queue not empty: $(ctl queue list | head -n 3)"

max=$(sed -n 's/.* OPEN active=\([0-9]*\)$/\1/p' "$S/fake.log" | sort -n | tail -n 1)
[ "$max" -le 2 ] || fail "$max connections at once (concurrency 2)"
[ "$max" -eq 2 ] || fail "only $max connection at a time: concurrency 2 not used"
# messages per connection: the MSG lines of each connection number
per=$(awk '$2 == "tls=0" && $3 == "MSG" { n[$1]++ } END { m = 0; for (c in n) if (n[c] > m) m = n[c]; print m }' "$S/fake.log")
[ "$per" -le 10 ] || fail "a connection carried $per messages (messages-per-connection 10)"
conns=$(grep -c " OPEN active=" "$S/fake.log")
[ "$conns" -ge $(((N + 2) / 10)) ] || fail "$conns connections for $((N + 2)) transactions"
# recipients per message: the RCPTs between each MAIL and its DATA
most=$(awk '$4 == "MAIL" { r[$1] = 0 } $4 == "RCPT" { r[$1]++ } $4 == "DATA" { if (r[$1] > m) m = r[$1] } END { print m + 0 }' "$S/fake.log")
[ "$most" -le 2 ] || fail "a transaction had $most recipients (recipients-per-message 2)"
[ "$(grep -c "C: RCPT TO:<r[0-9]@example.net>" "$S/fake.log")" = 5 ] ||
	fail "the 5 recipients of the last message did not all arrive"

fake_smtp_stop
mta_down
pass "$((N + 2)) transactions, at most $max connections at once, $per messages a connection, $most recipients a transaction"
