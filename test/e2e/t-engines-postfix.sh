#!/bin/bash
# t-engines-postfix: the content-inspection engines of test/engines.inc
# (the milters the mxbridge milter tests use) as real Postfix sees them.
# The srv Postfix gets smtpd_milters = rspamd, clamav-milter, opendkim, all
# three started by engines.inc in the srv namespace on 127.0.0.1, and
# milter_default_action = tempfail (a dead milter is a 451, not a pass):
#   1. GTUBE in the body: 554 5.7.1 Gtube pattern (rspamd), nothing stored;
#   2. a normal message: delivered with rspamd's headers (X-Spamd-Result,
#      X-Rspamd-Server: eng-rspamd, X-Rspamd-Queue-Id) and clamav-milter's
#      X-Virus-Status: Clean; no DKIM-Signature (From not in the domain);
#   3. the EICAR file as an attachment: rejected by clamav-milter (550
#      5.7.1 Command rejected: Postfix's text for a plain SMFIR_REJECT),
#      found by Eicar-Body-Local or Eicar-Hash-Local (clamd names the first
#      signature that matches: the body one); EICAR inside a line of text
#      (no hash can match): rejected by the body signature Eicar-Body-Local;
#   4. From in the DKIM domain (example.org, selector tb): the stored
#      message carries a DKIM-Signature d=example.org s=tb that
#      test/dkimverify.py accepts with the key opendkim-genkey made; a copy
#      with one body line changed, and one with the Subject changed, fail;
#   5. every engine stops on SIGTERM (eng_stop_all), none left.
# This is the reference of what Postfix does with these milters, for the
# mxbridge milter tests.  No mxbridge in it: it runs once, in the plain
# pass of check.sh.  Readiness times of the engines go to stderr.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
. "$TB_LIB_DIR/engines.inc"
case ${MXB_BUILD_TAG:-build} in
build) ;;
*) skip "engines test runs once, in the plain pass" ;;
esac
need swaks rspamd clamd clamav-milter opendkim opendkim-genkey
"$ENG_PYTHON" -c 'import dkim' 2>/dev/null || skip "needs python3-dkim"
tb_init
DKIM_DOMAIN=example.org
DKIM_SEL=tb
LO=127.0.0.1
P_RSPAMD=11332 P_CLAM=11333 P_DKIM=11334

eng_rspamd srv $LO $P_RSPAMD || fail "rspamd: $ENG_WHY"
t_rspamd=$ENG_READY_S
eng_clamav srv $LO $P_CLAM || fail "clamav: $ENG_WHY"
t_clam=$ENG_READY_S
eng_opendkim srv $LO $P_DKIM $DKIM_DOMAIN $DKIM_SEL || fail "opendkim: $ENG_WHY"
t_dkim=$ENG_READY_S
note "ready after: rspamd ${t_rspamd}s, clamd+clamav-milter ${t_clam}s, opendkim ${t_dkim}s"

tb_exec srv postconf -c "$TB_POSTFIX_CONF" -e \
	"smtpd_milters = inet:$LO:$P_RSPAMD, inet:$LO:$P_CLAM, inet:$LO:$P_DKIM" \
	"milter_default_action = tempfail" "milter_protocol = 6" ||
	fail "postconf smtpd_milters"
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"
wait_for maillog_has "reload .*configuration $TB_POSTFIX_CONF" ||
	fail "postfix did not reload"

# send TAG ARGS...: swaks from c1 to alice; the reply lines in $TB_STATE/TAG.out
send() {
	local tag=$1; shift
	tb_swaks c1 --server "$TB_SRV_IP4" --to alice@example.com \
		--h-Subject "$tag" "$@"
	local rc=$?
	cp "$TB_STATE/swaks.out" "$TB_STATE/$tag.out"
	return $rc
}
# final reply to DATA: the last server line of the session before QUIT
final_reply() { grep -E '^<[*~-]* +[0-9]{3}' "$TB_STATE/$1.out" | grep -v ' 221 ' | tail -n 1 | sed 's/^<[*~-]* *//'; }

# 1. GTUBE
send gtube --from spam@example.net --body "$ENG_GTUBE" &&
	fail "GTUBE accepted: $(final_reply gtube)"
got=$(final_reply gtube)
expect_glob "GTUBE reply" "$got" "554 5.7.1 Gtube pattern"
maillog_has "milter-reject: END-OF-MESSAGE .*: 5.7.1 Gtube pattern" ||
	fail "no milter-reject for GTUBE in the maillog"

# 2. a normal message
send normal --from friend@example.net --body "just a normal message" ||
	fail "normal message refused: $(final_reply normal)"
wait_for mail_has "$TB_MAILDIR/alice" normal || fail "normal message not delivered"
f=$(mail_file "$TB_MAILDIR/alice" normal)
for h in "X-Spamd-Result: default: False" "X-Rspamd-Server: eng-rspamd" \
    "X-Rspamd-Queue-Id: " "X-Spam-Status: No" "X-Virus-Status: Clean" \
    "X-Virus-Scanned: clamav-milter"; do
	grep -q "^$h" "$f" || fail "normal message without \"$h\": $(grep -E '^X-' "$f" | tr '\n' ' ')"
done
grep -qi '^DKIM-Signature:' "$f" && fail "normal message (From example.net) was signed"

# 3. EICAR: the file attached, then inside a line of text
printf '%s' "$ENG_EICAR" >"$TB_STATE/eicar.txt"
send eicar-file --from virus@example.net --body "see attachment" \
	--attach-type application/octet-stream --attach @"$TB_STATE/eicar.txt" &&
	fail "EICAR attachment accepted: $(final_reply eicar-file)"
grep -q 'filename="eicar.txt"' "$TB_STATE/eicar-file.out" ||
	fail "swaks did not attach the file: $(head -c 300 "$TB_STATE/eicar-file.out")"
got=$(final_reply eicar-file)
expect_glob "EICAR attachment reply" "$got" "550 5.7.1 Command rejected"
wait_for grep -Eq "infected by Eicar-(Hash|Body)-Local" "$ENG_CLAMAV_MILTER_LOG" ||
	fail "clamav-milter log without an EICAR signature: $(tail -n 3 "$ENG_CLAMAV_MILTER_LOG")"
send eicar-text --from virus@example.net \
	--body "this line carries $ENG_EICAR inside it" &&
	fail "EICAR text accepted: $(final_reply eicar-text)"
got=$(final_reply eicar-text)
expect_glob "EICAR text reply" "$got" "550 5.7.1 Command rejected"
wait_for grep -q "subject 'eicar-text'.* infected by Eicar-Body-Local" "$ENG_CLAMAV_MILTER_LOG" ||
	fail "clamav-milter log without Eicar-Body-Local: $(tail -n 3 "$ENG_CLAMAV_MILTER_LOG")"
maillog_has "milter-reject: END-OF-MESSAGE .*from=<virus@example.net>" ||
	fail "no milter-reject for EICAR in the maillog"

# 4. DKIM
send dkim --from "news@$DKIM_DOMAIN" --h-From "News <news@$DKIM_DOMAIN>" \
	--body "signed by opendkim for $DKIM_DOMAIN" ||
	fail "DKIM message refused: $(final_reply dkim)"
wait_for mail_has "$TB_MAILDIR/alice" dkim || fail "DKIM message not delivered"
f=$(mail_file "$TB_MAILDIR/alice" dkim)
grep -q "^DKIM-Signature: .*d=$DKIM_DOMAIN" "$f" ||
	grep -A3 '^DKIM-Signature:' "$f" | grep -q "d=$DKIM_DOMAIN;" ||
	fail "no DKIM-Signature d=$DKIM_DOMAIN: $(grep -A2 '^DKIM' "$f" | tr '\n' ' ')"
V=$TB_REPO/test/dkimverify.py
out=$("$ENG_PYTHON" "$V" "$f" $DKIM_SEL $DKIM_DOMAIN "$ENG_DKIM_TXTFILE" 2>&1) ||
	fail "signature does not verify: $out"
sed 's/^signed by opendkim/signed BY opendkim/' "$f" >"$TB_STATE/dkim-body.eml"
cmp -s "$f" "$TB_STATE/dkim-body.eml" && fail "tampering the body changed nothing"
out=$("$ENG_PYTHON" "$V" "$TB_STATE/dkim-body.eml" $DKIM_SEL $DKIM_DOMAIN "$ENG_DKIM_TXTFILE" 2>&1) &&
	fail "a changed body verifies: $out"
sed 's/^Subject: dkim/Subject: dkim!/' "$f" >"$TB_STATE/dkim-subj.eml"
out=$("$ENG_PYTHON" "$V" "$TB_STATE/dkim-subj.eml" $DKIM_SEL $DKIM_DOMAIN "$ENG_DKIM_TXTFILE" 2>&1) &&
	fail "a changed Subject verifies: $out"
note "tampered copy: $out"

# 5. each engine stops on SIGTERM
pids="$ENG_RSPAMD_PID $ENG_CLAMD_PID $ENG_CLAMAV_MILTER_PID $ENG_OPENDKIM_PID"
eng_stop_all || fail "an engine needed SIGKILL"
for p in $pids; do
	[ -e "/proc/$p" ] && fail "engine pid $p still there"
done
left=$(ip netns pids "$(tb_ns srv)" | while read -r p; do
	ps -o comm= -p "$p"; done | grep -E 'rspamd|clamd|clamav|opendkim')
[ -z "$left" ] || fail "engines left in srv: $left"
pass "GTUBE, EICAR rejected; rspamd and clamav headers; DKIM signed and verified (ready: rspamd ${t_rspamd}s, clamav ${t_clam}s, opendkim ${t_dkim}s)"
