#!/bin/bash
# t-milter-envelope: what a milter may change beyond the header on the
# MTA path, against test/fakemilter.py, checked in the protected server's
# Maildir:
#   - offered: every action (0xff) on the MTA path;
#   - a replaced body (two packets, bare LFs) is the body delivered, the
#     header kept; the same for a 3 MiB message (its spill file skipped);
#   - a recipient added (SMFIR_ADDRCPT_PAR with arguments, and the bare
#     SMFIR_ADDRCPT form) gets the message too;
#   - a recipient deleted (matched in any case) does not;
#   - a changed sender is the Return-Path the server records;
#   - every recipient deleted: 250, nothing delivered, logged;
#   - a bad address, an envelope change before the end, a body replaced
#     without the action granted: out of protocol, the default-action
#     (tempfail: 451, nothing queued);
#   - one log line per change; the daemon lives through it all.
. "$(dirname "$0")/t-mta-common.inc"

MP=10997
fakemilter_up $MP

conf() {	# DEFAULT-ACTION [MORE]
	mta_conf "domain \"example.com\" {
	server mx.example.com port 25
}
milter fake {
	socket inet:127.0.0.1:$MP
	connect-timeout 3s
	command-timeout 3s
	content-timeout 3s
	default-action $1
}
milters incoming fake
${2:-}"
}
conf tempfail
# delivered SUBJECT USER: the file of that user's copy, or nothing
delivered() { grep -rl -- "^Subject: $1\$" "$TB_MAILDIR/$2/new" "$TB_MAILDIR/$2/cur" 2>/dev/null | head -n 1; }
qid() { sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out"; }

mta_up

# 1. body replaced; every action offered
mode replbody
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-menv replbody" ||
	fail "replbody: $(cat "$S/send.out")"
id=$(qid)
wait_for -t 20 eval '[ -n "$(delivered "t-menv replbody" alice)" ]' ||
	fail "replbody: not delivered: $(tail -n 5 "$TB_MXB_LOG")"
f=$(delivered "t-menv replbody" alice)
mlog_has '"cmd": "O", "version": 6, "actions": 255' ||
	fail "not every action offered on the MTA path: $(grep '"O"' "$ML")"
grep -q "hello from the testbed" "$f" && fail "replbody: the old body is there: $(cat "$f")"
# the body: exactly the replacement, after the header and its empty line
sed '1,/^$/d' "$f" >"$S/body.out"
printf 'replaced body line one\nreplaced line two\nend of the replacement\n' >"$S/body.want"
cmp -s "$S/body.out" "$S/body.want" || fail "replbody: body $(od -c "$S/body.out" | head)"
grep -q "^From: <sender@example.org>" "$f" || fail "replbody: header lost: $(cat "$f")"
grep -q $'\r' "$f" && fail "replbody: a CR left in the delivered copy"
log_has "msgid=$id milter=fake action=replbody size=67" ||
	fail "replbody not logged: $(grep replbody "$TB_MXB_LOG")"

# 2. a big message (its body in the spill file) replaced
n=$(maildir_count alice)
tb_exec c1 python3 -c '
import smtplib, sys
line = "0123456789" * 7 + "\r\n"
msg = ("Subject: t-menv big\r\nX-Big: 1\r\n\r\n" + line * 43000 + "the end\r\n")
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="c1.test.example", timeout=60)
s.sendmail("sender@example.org", ["alice@example.com"], msg)
s.quit()' "$TB_SRV_IP4" >"$S/send.out" 2>&1 || fail "send big: $(cat "$S/send.out")"
wait_for -t 30 maildir_count alice -ge $((n + 1)) || fail "big: not delivered"
f=$(delivered "t-menv big" alice)
[ -n "$f" ] || fail "big: no copy"
grep -q "^0123456789" "$f" && fail "big: the old body is there ($(wc -c <"$f") bytes)"
grep -q "^X-Big: 1" "$f" || fail "big: header lost"
grep -q "^end of the replacement" "$f" || fail "big: no replacement: $(tail -n 3 "$f")"
[ "$(wc -c <"$f")" -lt 4000 ] || fail "big: $(wc -c <"$f") bytes"

# 3. a recipient added, with ESMTP arguments; 3b. the bare form
mode addrcpt bob@example.com
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-menv addrcpt" ||
	fail "addrcpt: $(cat "$S/send.out")"
id=$(qid)
wait_for -t 20 eval '[ -n "$(delivered "t-menv addrcpt" bob)" ]' ||
	fail "addrcpt: bob did not get it: $(grep "$id" "$TB_MXB_LOG" | tail -n 5)"
wait_for -t 20 eval '[ -n "$(delivered "t-menv addrcpt" alice)" ]' || fail "addrcpt: alice did not get it"
log_has "msgid=$id milter=fake action=addrcpt rcpt=<bob@example.com> route=" ||
	fail "addrcpt not logged: $(grep addrcpt "$TB_MXB_LOG")"
mode addrcpt-bare postmaster@example.com
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-menv addrcpt bare" ||
	fail "addrcpt bare: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(delivered "t-menv addrcpt bare" postmaster)" ]' ||
	fail "addrcpt bare: postmaster did not get it: $(grep postmaster "$TB_MXB_LOG" | tail -n 3)"

# 4. a recipient deleted (matched in any case): the other one only
mode delrcpt BOB@Example.COM
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,bob@example.com "t-menv delrcpt" ||
	fail "delrcpt: $(cat "$S/send.out")"
id=$(qid)
wait_for -t 20 eval '[ -n "$(delivered "t-menv delrcpt" alice)" ]' || fail "delrcpt: alice did not get it"
log_has "msgid=$id milter=fake action=delrcpt rcpt=<BOB@Example.COM> deleted=1" ||
	fail "delrcpt not logged: $(grep delrcpt "$TB_MXB_LOG")"
wait_for -t 10 queue_empty || fail "delrcpt: still queued: $(ctl queue list)"
[ -z "$(delivered "t-menv delrcpt" bob)" ] || fail "delrcpt: bob got it"

# 5. the sender changed: the server's Return-Path
mode chgfrom newsender@example.org
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-menv chgfrom" ||
	fail "chgfrom: $(cat "$S/send.out")"
id=$(qid)
wait_for -t 20 eval '[ -n "$(delivered "t-menv chgfrom" alice)" ]' || fail "chgfrom: not delivered"
f=$(delivered "t-menv chgfrom" alice)
grep -q "^Return-Path: <newsender@example.org>" "$f" ||
	fail "chgfrom: $(grep -i ^return-path "$f")"
log_has "msgid=$id milter=fake action=chgfrom from=<newsender@example.org>" ||
	fail "chgfrom not logged: $(grep chgfrom "$TB_MXB_LOG")"

# 6. every recipient deleted: 250, nothing delivered, logged
mode delall
na=$(maildir_count alice)
nb=$(maildir_count bob)
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com,bob@example.com "t-menv delall" ||
	fail "delall: not 250: $(cat "$S/send.out")"
grep -q "discarded" "$S/send.out" || fail "delall: $(cat "$S/send.out")"
log_has "milter=fake discarded: every recipient deleted" || fail "delall not logged"
wait_for -t 10 queue_empty || fail "delall: queued: $(ctl queue list)"
sleep 2
[ "$(maildir_count alice)" = "$na" ] && [ "$(maildir_count bob)" = "$nb" ] ||
	fail "delall: delivered"

# 7. out of protocol: its default-action (tempfail), nothing queued
for m in addrcpt-bad addrcpt-early ungranted; do
	mode $m
	send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-menv $m" &&
		fail "$m: accepted: $(cat "$S/send.out")"
	grep -Eq "451 (b')?4.7.1" "$S/send.out" || fail "$m: $(cat "$S/send.out")"
done
log_has "failed: bad envelope change '\+'; action=tempfail" || fail "bad address not logged"
log_has "failed: envelope change '\+' not granted; action=tempfail" || fail "early change not logged"
log_has "failed: body replacement not granted; action=tempfail" || fail "ungranted not logged"
wait_for -t 10 queue_empty || fail "mail queued past a failed milter: $(ctl queue list)"
sleep 1
[ -z "$(delivered "t-menv ungranted" alice)" ] || fail "ungranted: delivered"
mxb_running || fail "daemon died"
mta_down

# 8. a replaced body over the size limit: the milter failed; with
# default-action accept the message goes with the body it had
conf accept "limits {
	size 20K
}"
mta_up
mode replbody-big
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-menv replbody big" ||
	fail "replbody-big: $(cat "$S/send.out")"
wait_for -t 20 eval '[ -n "$(delivered "t-menv replbody big" alice)" ]' || fail "replbody-big: not delivered"
f=$(delivered "t-menv replbody big" alice)
grep -q "hello from the testbed" "$f" || fail "replbody-big: the body: $(cat "$f")"
grep -q "yyyy" "$f" && fail "replbody-big: the replacement was kept"
log_has "failed: replaced body over 20480 bytes; action=accept" || fail "replbody-big: not failed"
log_has "milter=fake body replacement dropped" || fail "replbody-big: drop not logged"
mta_down
pass "body replaced (spilled too; over the limit dropped), recipients added and deleted, sender changed, all deleted, bad changes refused"
