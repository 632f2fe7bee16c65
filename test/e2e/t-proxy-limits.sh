#!/bin/bash
# t-proxy-limits: orderly replies at every limit, on the live relay and on
# the MTA path: an over-long command (500, the session goes on), an
# over-long text line (refused at the dot), too many recipients (452
# 4.5.3, earlier ones kept and delivered), SIZE over the limit (552 at
# MAIL) and a body over it (552 at the dot), an error flood (421 and the
# close), an idle client and a trickling one (421 4.4.2), and a client
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
pass "limits: long command/line, recipients, size, errors, idle, trickle, data rate"
