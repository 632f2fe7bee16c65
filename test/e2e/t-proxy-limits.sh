#!/bin/bash
# t-proxy-limits: orderly replies at every limit, on the live relay and on
# the MTA path: an over-long command (500, the session goes on), an
# over-long text line (refused at the dot), too many recipients (452
# 4.5.3, earlier ones kept and delivered), SIZE over the limit (552 at
# MAIL) and a body over it (552 at the dot), an error flood (421 and the
# close), an idle client and a trickling one (421 4.4.2), a client that
# never reads its replies (dropped: the 421 cannot reach it), and a client
# sending DATA below the minimum rate (421 4.4.2).
. "$(dirname "$0")/t-proxy-common.inc"

proxy_conf "limits {
	recipients 5
	size 100K
	errors 5
	timeout command 3s
	timeout data 5s
	min-data-rate 1000
}"
proxy_up

# noread HOST: a client that fills both windows with NOOPs and never
# reads: the session must end on the daemon's side (timeout, then the
# 421 that cannot be written is given up), not hold its socket forever
# Each call has an output file of its own: the client is started in the
# background, and its shell may not have opened (emptied) a shared file
# yet when wait_for reads it, so a previous call's "ok port" line was
# taken for this one's (the wrong port, or none: "not dropped").
NOREAD_N=0
log_has_from() { tail -n "+$1" "$TB_MXB_LOG" | grep -Eq -- "$2"; }
noread() {
	local pid port out from
	NOREAD_N=$((NOREAD_N + 1))
	# only lines of this call count: an earlier session may have had
	# the same client port
	from=$(($(wc -l <"$TB_MXB_LOG") + 1))
	out=$S/noread.$NOREAD_N.out
	ip netns exec "$(tb_ns c1)" python3 "$SMUGGLE" client "$1" 25 noread 25 \
		>"$out" 2>&1 &
	pid=$!
	tbd_record_pid c1 noread "$pid"
	wait_for -t 40 grep -q "^ok port" "$out" ||
		fail "noread client: $(tail -n 2 "$out")"
	port=$(sed -n 's/^ok port \([0-9]*\):.*/\1/p' "$out")
	wait_for -t 20 log_has_from "$from" "client=$TB_C1_IP4:$port orig_dst=[^ ]+ dir=[a-z]+ disposition=[a-z-]+ messages=" ||
		fail "a client that never reads was not dropped: $(tail -n 1 "$out")"
	log_has_from "$from" "client=$TB_C1_IP4:$port output stalled: [0-9]+ bytes unread, connection reset" ||
		fail "the drop of the client that never reads is not logged as such"
	note "noread to $1: $(tail -n 1 "$out"), dropped"
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

for host in "$TB_EXT_IP4" "$TB_SRV_IP4"; do
	case $host in
	"$TB_EXT_IP4") rcpt=rcpt@example.net path=relay ;;
	*) rcpt=alice@example.com path=mta ;;
	esac
	hostile "$host" longcmd --rcpt "$rcpt"
	hostile "$host" longline --rcpt "$rcpt"
	grep -q "550 5.6.0" "$S/hostile.out" || fail "$path: long line not refused with 550 5.6.0"
	hostile "$host" rcpts 5 --rcpt "$rcpt"
	hostile "$host" size 102400 --rcpt "$rcpt"
	hostile "$host" errors 5 --rcpt "$rcpt"
	hostile "$host" idle 3 --rcpt "$rcpt"
	hostile "$host" trickle 3 --rcpt "$rcpt"
	noread "$host"
	log_has "disposition=timeout" || fail "$path: timeout not logged"
	log_has "disposition=too-many-errors" || fail "$path: error flood not logged"
	note "$path: limits ok"
done

# the recipients before the limit were kept: 5 at the sink
wait_for eval "grep -rqs 'Subject: many' '$TB_EXT_DIR'" || fail "recipient-limit message not at the sink"

# the minimum data rate (takes the 30 s window once)
hostile "$TB_EXT_IP4" slowdata --rcpt rcpt@example.net
log_has "disposition=too-slow" || fail "slow client not logged"

mxb_down
pass "limits: long command/line, recipients, size, errors, idle, trickle, no reader, data rate"
