#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-policy-openrelay: the gateway is not an open relay, end to end.
# From c2 (192.0.2.102), a client no match rule allows (the rules cover
# only c1, 192.0.2.101), through the incoming proxy (c2 -> 192.0.2.10) and
# through the outgoing proxy with the client's server not honoured
# (c2 -> 192.0.2.20, client-server ignore: the built-in MTA's path), with
# each of MAIL FROM <>, a local sender <alice@example.com> and an outside
# sender <bob@other.example>, every one of the recipients
#   <x@other.example> <"x@other.example"> <x%other.example@example.com>
#   <other.example!x> <@example.com:x@other.example> <x@[192.0.2.21]>
# is refused with 5xx, and nothing arrives anywhere: not at the smtp-sinks
# (ext 192.0.2.20, mx 192.0.2.21, relay host 192.0.2.30, which the config
# names so that anything leaving by the MTA lands there), not in a Maildir,
# not at Postfix at all, and the box's queue stays empty.
# Control case (so that the test can fail): after a reload with a rule
# allowing c2, <x@other.example> is accepted on both paths and arrives.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup "$TB_STATE/openrelay" 4
S=$MXB_DIR

# arrivals: every place a message could land, one number
arrivals() {
	echo $(( $(sink_count "$TB_EXT_DIR") + $(sink_count "$TB_MX_DIR") +
		$(sink_count "$TB_RELAY_DIR") + $(maildir_count alice) +
		$(maildir_count bob) + $(maildir_count postmaster) ))
}
# postfix_clients: connections Postfix accepted from anyone
postfix_clients() { grep -c "connect from unknown\[" "$TB_MAILLOG"; }

# conf FILE RULE...: c1 may relay; nothing else unless RULE says so
conf() {
	local rules=$2
	mxb_conf_head >"$1"
	cat >>"$1" <<EOF
default incoming proxy
default outgoing proxy
client-server default ignore
domain "example.com" {
	server $TB_SRV_IP4
}
relay-host $TB_RELAY_IP4
limits {
	errors 100
}
match client $TB_C1_IP4 relay
$rules
EOF
}

# Postfix would carry anything for other.example to the mx sink, so a
# leak through the protected server shows up there too
echo "other.example smtp:[$TB_MX_IP4]" >>"$TB_STATE/srv/transport"
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"

conf "$S/run.conf" ""
mxb_nf_up open
mxb_start_queue "$S/run.conf"

RCPTS=('<x@other.example>' '<"x@other.example">' '<x%other.example@example.com>'
	'<other.example!x>' '<@example.com:x@other.example>' "<x@[$TB_MX_IP4]>")
SENDERS=('<>' '<alice@example.com>' '<bob@other.example>')

a0=$(arrivals) p0=$(postfix_clients)
for dst in "$TB_SRV_IP4:incoming" "$TB_EXT_IP4:outgoing"; do
	ip=${dst%%:*} dir=${dst#*:}
	for from in "${SENDERS[@]}"; do
		steps=("EHLO c2.test.example" "MAIL FROM:$from")
		for r in "${RCPTS[@]}"; do steps+=("RCPT TO:$r"); done
		steps+=("DATA=t-policy-openrelay" QUIT)
		out=$(tb_chat c2 "$ip" 25 "${steps[@]}")
		echo "$out" >>"$S/battery.out"
		expect_glob "$dir: c2 -> $ip:25 greeted by the gateway" "$(echo "$out" | sed -n 1p)" \
			"220 gw.example.com*"
		expect_glob "$dir: MAIL FROM:$from (else the recipients were never tried)" \
			"$(echo "$out" | sed -n 3p)" "250*"
		i=4
		for r in "${RCPTS[@]}"; do
			expect_glob "$dir from c2, MAIL FROM:$from RCPT TO:$r" \
				"$(echo "$out" | sed -n ${i}p)" '5[0-9][0-9] *'
			i=$((i + 1))
		done
		expect_glob "$dir from c2, MAIL FROM:$from: DATA after refused recipients" \
			"$(echo "$out" | sed -n ${i}p)" '[45][0-9][0-9] *'
	done
	grep -Eq "session=[0-9]+ client=$TB_C2_IP4:[0-9]+ orig_dst=$ip:25 dir=$dir" "$TB_MXB_LOG" ||
		fail "no $dir session of c2 logged"
done
sleep 2
[ "$(arrivals)" = "$a0" ] || fail "a refused message arrived somewhere ($a0 -> $(arrivals))"
[ "$(postfix_clients)" = "$p0" ] || fail "something connected to Postfix: $(grep 'connect from' "$TB_MAILLOG" | tail -n 1)"
q=$(mxb_ctl queue list) || fail "mxbridgectl queue list: $q"
[ -z "$(echo "$q" | grep -v '^[[:space:]]*$')" ] || fail "the box queued something: $(echo "$q" | head -n 2 | tr '\n' ' ')"

# control: a rule allowing c2 lets <x@other.example> through, on both paths
conf "$S/run.conf" "match client $TB_C2_IP4 relay"
mxb_reload
for dst in "$TB_SRV_IP4:incoming" "$TB_EXT_IP4:outgoing"; do
	ip=${dst%%:*} dir=${dst#*:}
	a0=$(arrivals)
	out=$(tb_chat c2 "$ip" 25 "EHLO c2.test.example" "MAIL FROM:<bob@other.example>" \
		"RCPT TO:<x@other.example>" "DATA=t-policy-openrelay control $dir" QUIT)
	expect_glob "control ($dir): c2 allowed by a rule, RCPT TO:<x@other.example>" \
		"$(echo "$out" | sed -n 4p)" "250*"
	expect_glob "control ($dir): DATA" "$(echo "$out" | sed -n 5p)" "250*"
	wait_for -t 15 eval '[ "$(arrivals)" -gt "$a0" ]' ||
		fail "control ($dir): the accepted message arrived nowhere: $(grep -E 'msgid=' "$TB_MXB_LOG" | tail -n 2 | tr '\n' ' ')"
done

mxb_down
pass "36 relay attempts refused on the incoming and outgoing proxies, nothing arrived; control accepted"
