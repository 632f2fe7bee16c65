#!/bin/bash
# shellcheck disable=SC2016,SC2034
# (eval'd wait_for conditions)
# t-policy-reload: reloading the configuration under traffic.
#   - a session open across a reload completes under the snapshot it
#     started with: c1 opens an SMTP session through the incoming proxy,
#     says EHLO and MAIL; the config is changed (p0 incoming -> pass, and a
#     rule refusing alice) and `mxbridgectl reload`ed; the session then
#     finishes RCPT <alice> and DATA: accepted, queued and delivered into
#     alice's Maildir by the box, as the old snapshot decided;
#   - new sessions see the new config: the next connection gets Postfix's
#     own banner (pass) and Postfix logs the real client; after a SIGHUP
#     back to proxy with a rule refusing bob, a new session gets the
#     gateway's banner and bob is refused with the rule's text;
#   - a broken config is refused: `mxbridgectl reload` exits 1 naming
#     FILE:LINE, the log says so (also for SIGHUP), and the old config
#     keeps serving (gateway banner, bob still refused, alice delivered);
#   - a reload changing `workers` is refused with the reason (the loops
#     are fixed at start), status still says the old number; `mxbridge
#     -n` accepts the new one (a restart would take it);
#   - the file is parsed off the daemon's loop: while a reload waits
#     seconds for a name (the box's resolver made silent), `mxbridgectl
#     status` answers at once, and the reload then answers with the
#     reason ("cannot resolve").
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup "$TB_STATE/reload" 3
S=$MXB_DIR

# sessions: incoming sessions of c1 the daemon has logged
sessions() { grep -Ec "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_SRV_IP4:25 dir=incoming" "$TB_MXB_LOG"; }
reloads() { grep -c "reload: configuration=" "$TB_MXB_LOG"; }
refusals() { grep -c "reload refused" "$TB_MXB_LOG"; }

# conf FILE P0-INCOMING [RULE]: the config of mxb_conf_write (p0 outgoing
# proxy), then RULE, which comes before the rule letting the local network
# relay, so it decides for the recipients it names
conf() {
	mxb_conf_write "$1" "$2" proxy
	printf '%s\nmatch client %s relay\n' "${3:-# no extra rule}" "$TB_PREFIX4" >>"$1"
}

conf "$S/run.conf" proxy
mxb_nf_up open
mxb_start_queue "$S/run.conf"
r=$(tb_banner c1 "$TB_SRV_IP4")
expect_glob "c1 to $TB_SRV_IP4:25 before any reload" "$r" "BANNER 220 gw.example.com*"

# 1. a session open across `mxbridgectl reload` finishes under the old
# snapshot: proxied, alice accepted, delivered by the box
n=$(sessions)
tb_chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test.example" "MAIL FROM:<sender@example.org>" \
	"WAIT=$S/go1" "RCPT TO:<alice@example.com>" "DATA=t-policy-reload old" QUIT \
	>"$S/s1.out" 2>&1 &
s1=$!
wait_for eval '[ "$(wc -l <"$S/s1.out")" -ge 3 ]' ||
	fail "session 1 did not get through MAIL: $(cat "$S/s1.out")"
expect_glob "session 1 MAIL" "$(sed -n 3p "$S/s1.out")" "250*"
[ "$(sessions)" -gt "$n" ] || fail "session 1 was not proxied"
nr=$(reloads)
conf "$S/run.conf" pass 'match to alice@example.com reject "5.7.1 alice is closed"'
mxb_reload "reload of a good config"
wait_for eval '[ "$(reloads)" -gt "$nr" ]' || fail "reload not logged"

# new sessions see the new config: pass, Postfix answers itself
n=$(maillog_connects "$TB_C1_IP4")
r=$(tb_banner c1 "$TB_SRV_IP4")
expect_glob "c1 to $TB_SRV_IP4:25 after reload to pass" "$r" "BANNER 220 mx.example.com ESMTP*"
wait_for eval '[ "$(maillog_connects "$TB_C1_IP4")" -gt "$n" ]' ||
	fail "Postfix did not see the real client $TB_C1_IP4 after the reload"

# now let session 1 finish
touch "$S/go1"
wait "$s1"
expect_glob "session 1 RCPT after the reload" "$(sed -n 5p "$S/s1.out")" "250*"
expect_glob "session 1 DATA after the reload" "$(sed -n 6p "$S/s1.out")" "250*"
expect_glob "session 1 QUIT" "$(sed -n 7p "$S/s1.out")" "221*"
wait_for -t 15 mail_has "$TB_MAILDIR/alice" "t-policy-reload old" ||
	fail "the message of the session open across the reload was not delivered to alice: $(grep -E 'msgid=' "$TB_MXB_LOG" | tail -n 2 | tr '\n' ' ')"
maillog_has "connect from unknown\[$TB_BOX_IP4\]" ||
	fail "alice's message did not come from the box"

# a message on the pass path: Postfix takes it from the real client
expect_postfix_direct c1 "$TB_C1_IP4" "$TB_SRV_IP4" bob@example.com "t-policy-reload pass"

# 2. SIGHUP: back to proxy, bob refused by a rule; alice may again
nr=$(reloads)
conf "$S/run.conf" proxy 'match to bob@example.com reject "5.7.1 bob is closed"'
kill -HUP "$(cat "$TB_MXB_PIDFILE")"
wait_for eval '[ "$(reloads)" -gt "$nr" ]' || fail "SIGHUP reload not logged: $(tail -n 2 "$TB_MXB_LOG")"
n=$(sessions)
out=$(tb_chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test.example" "MAIL FROM:<sender@example.org>" \
	"RCPT TO:<bob@example.com>" "RCPT TO:<alice@example.com>" "DATA=t-policy-reload hup" QUIT)
expect_glob "banner after SIGHUP to proxy" "$(echo "$out" | sed -n 1p)" "220 gw.example.com*"
expect_glob "RCPT bob after SIGHUP" "$(echo "$out" | sed -n 4p)" "550 5.7.1 bob is closed*"
expect_glob "RCPT alice after SIGHUP" "$(echo "$out" | sed -n 5p)" "250*"
expect_glob "DATA after SIGHUP" "$(echo "$out" | sed -n 6p)" "250*"
[ "$(sessions)" -gt "$n" ] || fail "session after SIGHUP was not proxied"
wait_for -t 15 mail_has "$TB_MAILDIR/alice" "t-policy-reload hup" ||
	fail "message after SIGHUP not delivered to alice"

# 3. a broken config is refused, by reload and by SIGHUP; the old serves on
cp "$S/run.conf" "$S/good.conf"
{ cat "$S/good.conf"; echo "frobnicate yes"; } >"$S/run.conf"
line=$(wc -l <"$S/run.conf")
nr=$(reloads) nf=$(refusals)
out=$(mxb_ctl reload 2>&1); rc=$?
[ $rc -eq 1 ] || fail "reload of a broken config: exit $rc, want 1: $out"
echo "$out" | grep -q "run.conf:$line" || fail "reload refusal lacks FILE:LINE run.conf:$line: $out"
wait_for eval '[ "$(refusals)" -gt "$nf" ]' || fail "refused reload not logged"
grep "reload refused" "$TB_MXB_LOG" | tail -n 1 | grep -q "run.conf:$line" ||
	fail "log of the refused reload lacks run.conf:$line: $(grep "reload refused" "$TB_MXB_LOG" | tail -n 1)"
nf=$(refusals)
kill -HUP "$(cat "$TB_MXB_PIDFILE")"
wait_for eval '[ "$(refusals)" -gt "$nf" ]' || fail "refused SIGHUP reload not logged"
[ "$(reloads)" = "$nr" ] || fail "a broken config was loaded"
mxb_running || fail "daemon died on a broken config"
out=$(tb_chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test.example" "MAIL FROM:<sender@example.org>" \
	"RCPT TO:<bob@example.com>" "RCPT TO:<alice@example.com>" "DATA=t-policy-reload kept" QUIT)
expect_glob "banner after a refused reload" "$(echo "$out" | sed -n 1p)" "220 gw.example.com*"
expect_glob "RCPT bob after a refused reload" "$(echo "$out" | sed -n 4p)" "550 5.7.1 bob is closed*"
expect_glob "RCPT alice after a refused reload" "$(echo "$out" | sed -n 5p)" "250*"
expect_glob "DATA after a refused reload" "$(echo "$out" | sed -n 6p)" "250*"
wait_for -t 15 mail_has "$TB_MAILDIR/alice" "t-policy-reload kept" ||
	fail "message after a refused reload not delivered to alice"

# 4. the number of worker loops is fixed at start: a reload that changes it
#    is refused with the reason and the running configuration stays; the
#    same file is a good one to start with
cur=$(mxb_ctl status | sed -n 's/^workers=//p')
[ -n "$cur" ] || fail "status lacks workers="
new=$((cur + 1))
sed "s/^workers .*/workers $new/" "$S/good.conf" >"$S/run.conf"
grep -qx "workers $new" "$S/run.conf" || fail "no workers line to change in run.conf"
nr=$(reloads) nf=$(refusals)
out=$(mxb_ctl reload 2>&1); rc=$?
[ $rc -eq 1 ] || fail "reload changing workers: exit $rc, want 1: $out"
echo "$out" | grep -q "workers changed ($cur to $new): the number of worker loops needs a restart" ||
	fail "reload changing workers lacks the reason: $out"
wait_for eval '[ "$(refusals)" -gt "$nf" ]' || fail "refused workers reload not logged"
[ "$(reloads)" = "$nr" ] || fail "a reload changing workers was loaded"
mxb_running || fail "daemon died on a reload changing workers"
out=$(mxb_ctl status 2>&1)
echo "$out" | grep -qx "workers=$cur" || fail "status lacks workers=$cur: $out"
out=$("$MXB_BINDIR/mxbridge" -n -f "$S/run.conf" 2>&1); rc=$?
[ $rc -eq 0 ] || fail "mxbridge -n with workers $new: exit $rc, want 0: $out"
cp "$S/good.conf" "$S/run.conf"

# 5. a slow name does not stop the daemon's loop: the parse runs on the
#    thread pool.  The box's resolver becomes a silent one (a UDP socket
#    in the box that reads and never answers); the resolver file is
#    written in place, as the box sees it through a bind mount.
RESOLV=/etc/netns/$(tb_ns box)/resolv.conf
cp "$RESOLV" "$S/resolv.saved"
tb_exec box python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.53", 53))
open(sys.argv[1], "w").write("ready\n")
while True:
    s.recv(512)
' "$S/silent.ready" &
silent=$!
slow_cleanup() { kill "$silent" 2>/dev/null; cat "$S/resolv.saved" >"$RESOLV"; }
TB_ATEXIT=slow_cleanup
wait_for test -s "$S/silent.ready" || fail "the silent resolver did not start"
printf 'nameserver 127.0.0.53\noptions timeout:4 attempts:1\n' >"$RESOLV"
{ cat "$S/good.conf"; printf 'domain slow.example {\n\tserver mail.slow.example\n}\n'; } >"$S/run.conf"
nr=$(grep -c "reload: reading configuration=" "$TB_MXB_LOG")
mxb_ctl reload >"$S/slow.out" 2>&1 &
rp=$!
wait_for eval '[ "$(grep -c "reload: reading configuration=" "$TB_MXB_LOG")" -gt "$nr" ]' ||
	fail "the slow reload did not start: $(tail -n 3 "$TB_MXB_LOG")"
out=$(timeout 2 "$MXB_BINDIR/mxbridgectl" -s "$MXB_DIR/ctl.sock" status 2>&1) ||
	fail "status did not answer within 2 s while a reload resolved a name: $out"
echo "$out" | grep -q "^state=running" || fail "status during the slow reload: $out"
kill -0 "$rp" 2>/dev/null ||
	fail "the reload answered before its name could resolve: $(cat "$S/slow.out")"
wait "$rp"; rc=$?
slow_cleanup
TB_ATEXIT=
[ $rc -eq 1 ] || fail "the reload with an unresolvable server: exit $rc, want 1: $(cat "$S/slow.out")"
grep -q 'reload refused: .*server: cannot resolve "mail.slow.example"' "$S/slow.out" ||
	fail "the slow reload's answer lacks the reason: $(cat "$S/slow.out")"
cp "$S/good.conf" "$S/run.conf"
mxb_reload "reload after the slow one"

mxb_down
pass "session across reload finishes on the old snapshot, new sessions see the new one, broken config refused, workers change refused, a slow name does not stop the loop"
