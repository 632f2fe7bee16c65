#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-policy-routes: every row of the routing table of mxbridge.conf(5)
# ("Routing a recipient") end to end, each recipient followed to where it
# lands:
#   R1 incoming session, protected recipient -> the server the client
#      dialled: alice's Maildir, delivered by the box;
#   R2 incoming, outside recipient, deliver-via-server yes -> handed to the
#      protected server (Postfix, whose transport map sends example.net to
#      [192.0.2.21]): the mx sink gets it from Postfix (Postfix's log
#      shows the relay to 192.0.2.21, the sink shows client 192.0.2.10);
#   R3 incoming, outside recipient, deliver-via-server no, no relay-host ->
#      the MX of example.net (mx sink 192.0.2.21) straight from the box,
#      Postfix never sees it; a protected recipient of the same message
#      still goes to Postfix (bob's Maildir);
#   R4 the same with relay-host 192.0.2.30 -> the relay host sink, not the
#      MX; the protected recipient of the same message still to Postfix;
#   R5 outgoing session, client's server not honoured, no relay-host -> the
#      MX (mx sink 192.0.2.21), not the dialled 192.0.2.20; a protected
#      recipient of an outgoing session goes by MX too (mx.example.com is
#      192.0.2.10: alice's Maildir);
#   R6 the same with relay-host 192.0.2.30 -> the relay sink, for the
#      outside and the protected recipient alike.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup "$TB_STATE/routes" 7
S=$MXB_DIR

# in_maildir USER SUBJECT
in_maildir() { mail_has "$TB_MAILDIR/$1" "$2"; }
diag() { grep -E 'msgid=|mta:' "$TB_MXB_LOG" | tail -n 3 | tr '\n' ' '; }

# conf FILE DELIVER-VIA-SERVER [RELAY-HOST]
conf() {
	mxb_conf_head >"$1"
	cat >>"$1" <<EOF
default incoming proxy
default outgoing proxy
client-server default ignore
domain "example.com" {
	server $TB_SRV_IP4
	deliver-via-server $2
}
${3:+relay-host $3}
match client $TB_PREFIX4 relay
EOF
}
setconf() {
	conf "$S/run.conf" "$@"
	mxb_reload
}
# send DST SUBJECT RCPT...: one message from c1 through the gateway
send() {
	local dst=$1 subj=$2 out st want r
	shift 2
	st=("EHLO c1.test.example" "MAIL FROM:<sender@example.org>")
	want="220 250 250 "
	for r in "$@"; do st+=("RCPT TO:<$r>"); want="${want}250 "; done
	out=$(tb_chat c1 "$dst" 25 "${st[@]}" "DATA=$subj" QUIT)
	want="${want}250 221 "
	[ "$(echo "$out" | awk '{ printf "%s ", $1 }')" = "$want" ] ||
		fail "$subj: c1 -> $dst:25 not accepted: $(echo "$out" | tr '\n' '/')"
	expect_glob "$subj: greeting" "$(echo "$out" | sed -n 1p)" "220 gw.example.com*"
}
# sink_client DIR SUBJECT: X-Client-Addr of the dump
sink_client() { sed -n 's/^X-Client-Addr: //p' "$(mail_file "$1" "$2")"; }
# check_only SUBJECT PLACE...: SUBJECT is in each PLACE (alice bob ext mx
# relay) and in none of the others
check_only() {
	local subj=$1 p want
	shift
	for p in alice bob ext mx relay; do
		case " $* " in *" $p "*) want=1 ;; *) want=0 ;; esac
		case $p in
		alice|bob) if in_maildir $p "$subj"; then got=1; else got=0; fi ;;
		ext) if mail_has "$TB_EXT_DIR" "$subj"; then got=1; else got=0; fi ;;
		mx) if mail_has "$TB_MX_DIR" "$subj"; then got=1; else got=0; fi ;;
		relay) if mail_has "$TB_RELAY_DIR" "$subj"; then got=1; else got=0; fi ;;
		esac
		[ $got = $want ] || fail "$subj: $( [ $want = 1 ] && echo "did not reach" || echo "also reached") $p: $(diag)"
	done
}
# sink_rcpts DIR SUBJECT: the recipients the sink got, space separated
# (over every transaction that carried SUBJECT), sorted
sink_rcpts() {
	grep -rl "^Subject: $2\$" "$1" 2>/dev/null | xargs -r sed -n 's/^X-Rcpt-Args: //p' |
		grep -o '^<[^>]*>' | sort | tr '\n' ' ' | sed 's/ $//'
}

# Postfix hands example.net to the mx sink (test/README.testbed)
echo "example.net smtp:[$TB_MX_IP4]" >>"$TB_STATE/srv/transport"
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"

conf "$S/run.conf" yes
mxb_nf_up open
mxb_start_queue "$S/run.conf"

# R1, R2: deliver-via-server yes, no relay host
send "$TB_SRV_IP4" "routes R1" alice@example.com
wait_for -t 15 in_maildir alice "routes R1" || fail "routes R1: not in alice's Maildir: $(diag)"
maillog_has "connect from unknown\[$TB_BOX_IP4\]" || fail "routes R1: Postfix never saw the box"
send "$TB_SRV_IP4" "routes R2" r2@example.net
wait_for -t 20 mail_has "$TB_MX_DIR" "routes R2" ||
	fail "routes R2: not at the mx sink: $(diag) $(grep 'r2@example.net' "$TB_MAILLOG" | tail -n 1)"
maillog_has "to=<r2@example.net>, relay=$TB_MX_IP4\[$TB_MX_IP4\]:25.*status=sent" ||
	fail "routes R2: Postfix's log does not show it relayed to $TB_MX_IP4"
[ "$(sink_client "$TB_MX_DIR" "routes R2")" = "$TB_SRV_IP4" ] ||
	fail "routes R2: the mx sink got it from $(sink_client "$TB_MX_DIR" "routes R2"), not Postfix"
check_only "routes R1" alice
check_only "routes R2" mx

# R3: deliver-via-server no, no relay host: the MX, straight from the box
setconf no
send "$TB_SRV_IP4" "routes R3" r3@example.net bob@example.com
wait_for -t 15 mail_has "$TB_MX_DIR" "routes R3" || fail "routes R3: not at the mx sink: $(diag)"
wait_for -t 15 in_maildir bob "routes R3" || fail "routes R3: bob@example.com not in bob's Maildir: $(diag)"
[ "$(sink_client "$TB_MX_DIR" "routes R3")" = "$TB_BOX_IP4" ] ||
	fail "routes R3: the mx sink got it from $(sink_client "$TB_MX_DIR" "routes R3"), not the box"
[ "$(sink_rcpts "$TB_MX_DIR" "routes R3")" = "<r3@example.net>" ] ||
	fail "routes R3: the mx sink got recipients $(sink_rcpts "$TB_MX_DIR" "routes R3")"
maillog_has "r3@example.net" && fail "routes R3: Postfix saw r3@example.net"
check_only "routes R3" bob mx

# R4: deliver-via-server no, relay host: the relay host
setconf no "$TB_RELAY_IP4"
send "$TB_SRV_IP4" "routes R4" r4@example.net alice@example.com
wait_for -t 15 mail_has "$TB_RELAY_DIR" "routes R4" || fail "routes R4: not at the relay host: $(diag)"
wait_for -t 15 in_maildir alice "routes R4" || fail "routes R4: alice@example.com not in alice's Maildir: $(diag)"
[ "$(sink_rcpts "$TB_RELAY_DIR" "routes R4")" = "<r4@example.net>" ] ||
	fail "routes R4: the relay host got recipients $(sink_rcpts "$TB_RELAY_DIR" "routes R4")"
maillog_has "r4@example.net" && fail "routes R4: Postfix saw r4@example.net"
check_only "routes R4" alice relay

# R5: outgoing, not honoured, no relay host: the MX, not the dialled server
setconf yes
send "$TB_EXT_IP4" "routes R5" r5@example.net alice@example.com
wait_for -t 15 mail_has "$TB_MX_DIR" "routes R5" || fail "routes R5: not at the mx sink: $(diag)"
wait_for -t 15 in_maildir alice "routes R5" ||
	fail "routes R5: alice@example.com (MX mx.example.com) not in alice's Maildir: $(diag)"
[ "$(sink_rcpts "$TB_MX_DIR" "routes R5")" = "<r5@example.net>" ] ||
	fail "routes R5: the mx sink got recipients $(sink_rcpts "$TB_MX_DIR" "routes R5")"
[ "$(sink_client "$TB_MX_DIR" "routes R5")" = "$TB_BOX_IP4" ] ||
	fail "routes R5: the mx sink got it from $(sink_client "$TB_MX_DIR" "routes R5"), not the box"
check_only "routes R5" alice mx

# R6: outgoing, not honoured, relay host: everything to the relay host
setconf yes "$TB_RELAY_IP4"
send "$TB_EXT_IP4" "routes R6" r6@example.net alice@example.com
wait_for -t 15 mail_has "$TB_RELAY_DIR" "routes R6" || fail "routes R6: not at the relay host: $(diag)"
wait_for -t 5 eval '[ "$(sink_rcpts "$TB_RELAY_DIR" "routes R6" | wc -w)" -ge 2 ]'
r=$(sink_rcpts "$TB_RELAY_DIR" "routes R6")
[ "$r" = "<alice@example.com> <r6@example.net>" ] ||
	fail "routes R6: the relay host got recipients '$r', want both"
sleep 0.5
check_only "routes R6" relay

mxb_down
pass "R1-R6: original server, via the protected server, MX and relay host, by direction"
