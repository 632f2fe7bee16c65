#!/bin/bash
# t-feature-liverules: the relay rules on a live relay (outgoing,
# client-chosen server honoured), with no "match client ... relay" rule:
#   - a recipient no rule matches goes to the upstream, which decides
#     (the no-open-relay default is the MTA path's only);
#   - reject and tempfail rules are answered in the session with their
#     text, a discard rule with 250: none of them reaches the upstream;
#   - a sender rule refuses at RCPT;
#   - a message whose every recipient was discarded gets 250 at the dot,
#     nothing reaches the upstream, and the next message of the same
#     session goes through.
. "$(dirname "$0")/t-proxy-common.inc"

mxb_conf_head >"$S/run.conf"
cat >>"$S/run.conf" <<CONF
domain "example.com" {
	server $TB_SRV_IP4 port 25
}
client-server default honour
match to @blocked.example reject "5.7.1 no mail for blocked.example"
match to later@example.net tempfail
match to void@example.net discard
match from spammer@bad.example reject
match to @relayed.example relay
CONF
proxy_up
fake_up

# talk SERVER STEP...: one session; a STEP is "MAIL addr", "RCPT addr" or
# "DATA subject"; every reply goes to $S/talk.out as "VERB arg code text"
talk() {
	local server=$1; shift
	tb_exec c1 python3 -c '
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=30)
s.ehlo()
for step in sys.argv[2:]:
    verb, arg = step.split(" ", 1)
    if verb == "MAIL":
        code, rep = s.docmd("MAIL", "FROM:<%s>" % arg)
    elif verb == "RCPT":
        code, rep = s.docmd("RCPT", "TO:<%s>" % arg)
    else:
        code, rep = s.data("Subject: %s\r\n\r\nhello\r\n" % arg)
    print("%s %s %d %s" % (verb, arg, code, rep.decode()), flush=True)
s.quit()
' "$server" "$@" >"$S/talk.out" 2>&1
}
said() { grep -Eq -- "$1" "$S/talk.out" || fail "$2: $(cat "$S/talk.out")"; }

talk "$FAKE_IP" "MAIL sender@example.org" "RCPT ok@example.net" \
	"RCPT x@blocked.example" "RCPT later@example.net" "RCPT void@example.net" \
	"RCPT other@example.org" "RCPT y@relayed.example" "DATA t-live-1" \
	"MAIL sender@example.org" "RCPT void@example.net" "DATA t-live-sink" \
	"MAIL sender@example.org" "RCPT ok2@example.net" "DATA t-live-2" \
	"MAIL spammer@bad.example" "RCPT ok3@example.net" ||
	fail "session failed: $(tail -n 3 "$S/talk.out")"

said "^RCPT ok@example.net 250 " "no rule: not passed upstream"
said "^RCPT other@example.org 250 " "no rule, not protected: refused (open-relay default on a live relay)"
said "^RCPT x@blocked.example 550 5\.7\.1 no mail for blocked\.example$" "reject rule not answered in session"
said "^RCPT later@example.net 451 4\.7\.1 " "tempfail rule not answered in session"
said "^RCPT void@example.net 250 " "discard rule not answered 250"
said "^DATA t-live-1 250 2\.0\.0 Ok: stored" "first message not relayed"
said "^DATA t-live-sink 250 2\.0\.0 Ok: discarded" "discard-only message not taken and dropped"
said "^DATA t-live-2 250 2\.0\.0 Ok: stored" "message after the discarded one not relayed"
said "^RCPT ok3@example.net 550 5\.7\.1 Recipient address rejected by policy" "sender rule not applied"

wait_for sink_count "$S/fake" -ge 2 || fail "messages not at the upstream"
sleep 1
[ "$(sink_count "$S/fake")" = 2 ] || fail "$(sink_count "$S/fake") messages at the upstream, want 2"
f1=$(grep -l "t-live-1" "$S/fake"/* | head -n 1)
[ -n "$f1" ] || fail "first message not at the upstream"
for r in ok@example.net other@example.org y@relayed.example; do
	grep -q "^RCPT TO:<$r>" "$f1" || fail "$r not passed upstream: $(head -n 8 "$f1")"
done
for r in x@blocked.example later@example.net void@example.net; do
	grep -q "$r" "$f1" && fail "$r reached the upstream"
done
grep -rqs "t-live-sink" "$S/fake" && fail "the discarded message reached the upstream"
f2=$(grep -l "t-live-2" "$S/fake"/* | head -n 1)
grep -q "^RCPT TO:<ok2@example.net>" "$f2" || fail "second message's recipient: $(head -n 4 "$f2")"
grep -rqs "ok3@example.net" "$S/fake" && fail "the refused sender's recipient reached the upstream"
for v in "x@blocked.example> verdict=reject" "later@example.net> verdict=tempfail" \
	"void@example.net> verdict=discard" "ok3@example.net> verdict=reject"; do
	log_has "dir=outgoing rcpt=<$v" || fail "not logged: $v"
done
[ "$(spool_files)" = 0 ] || fail "the live relay queued something"

fake_down
mxb_down
pass "live relay: explicit rules answer in session, no match goes upstream, discard-only message dropped"
