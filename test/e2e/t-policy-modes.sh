#!/bin/bash
# shellcheck disable=SC2016
# (eval'd wait_for conditions)
# t-policy-modes: every port/direction mode end to end.  For incoming
# (c1 -> 192.0.2.10, Postfix) and outgoing (c1 -> 192.0.2.20, the ext
# sink), each of proxy, pass and drop, set two ways:
#   port:    in the p0 block, with the global default of that direction
#            set to something else (the block must win);
#   default: by "default DIR ACTION", with a p0 block that sets only the
#            other direction (a block that does not set a direction
#            follows the default).
# Expected:
#   proxy:   incoming: the gateway's banner, the daemon logs the session
#            (dir=incoming), Postfix sees no connection from c1;
#            outgoing (client server honoured, the default): the session
#            is relayed live: the upstream's banner comes back relayed and
#            the daemon logs the session (dir=outgoing); with
#            "client-server default ignore": the gateway's own banner;
#   pass:    the real server answers and sees the real client: Postfix's
#            log shows 192.0.2.101; the ext sink receives a message whose
#            X-Client-Addr is 192.0.2.101; the daemon logs no session;
#   drop:    the connection is refused or reset (or times out), and
#            nothing reaches Postfix, the sink or the daemon.
# t-intercept-v4.sh covers p0 incoming drop / outgoing pass / incoming
# pass with the global defaults at proxy; here the defaults always differ
# from the port's setting, so no case is the same as there.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup "$TB_STATE/modes" 6
S=$MXB_DIR

# sessions IP DIR: sessions of c1 to IP:25 the daemon has accepted
sessions() { grep -Ec "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$1:25 dir=$2 port=p0" "$TB_MXB_LOG"; }
other() {	# an action other than $1
	case $1 in proxy) echo drop ;; pass) echo drop ;; drop) echo pass ;; esac
}

# conf FILE DEF-IN DEF-OUT P0-LINES [EXTRA]
conf() {
	mxb_conf_head >"$1"
	cat >>"$1" <<EOF
default incoming $2
default outgoing $3
port "p0" {
	$4
}
domain "example.com" {
	server $TB_SRV_IP4
}
match client $TB_PREFIX4 relay
$5
EOF
}
# setmode DIR ACTION port|default [EXTRA]: reload with that setting
setmode() {
	local dir=$1 act=$2 via=$3 o din dout p0
	o=$(other "$act")
	if [ "$via" = port ]; then
		if [ "$dir" = incoming ]; then din=$o dout=proxy; else din=proxy dout=$o; fi
		p0="$dir $act"
	else
		if [ "$dir" = incoming ]; then din=$act dout=proxy; else din=proxy dout=$act; fi
		# the block sets the other direction only (to its default)
		if [ "$dir" = incoming ]; then p0="outgoing proxy"; else p0="incoming proxy"; fi
	fi
	conf "$S/run.conf" "$din" "$dout" "$p0" "${4:-}"
	mxb_reload "reload ($dir $act via $via)"
}

conf "$S/run.conf" proxy proxy "incoming proxy"
mxb_nf_up open
mxb_start_queue "$S/run.conf"

k=0
for dir in incoming outgoing; do
	if [ $dir = incoming ]; then ip=$TB_SRV_IP4; else ip=$TB_EXT_IP4; fi
	for act in proxy pass drop; do
		for via in port default; do
			k=$((k + 1))
			what="$dir $act (via $via)"
			setmode $dir $act $via
			ns=$(sessions "$ip" $dir) npf=$(maillog_connects "$TB_C1_IP4")
			next=$(sink_count "$TB_EXT_DIR")
			r=$(tb_banner c1 "$ip" 25 3)
			subj="t-policy-modes $k"
			case $dir/$act in
			incoming/proxy)
				expect_glob "$what" "$r" "BANNER 220 gw.example.com*"
				wait_for eval '[ "$(sessions "$ip" $dir)" -gt "$ns" ]' ||
					fail "$what: no session with dir=$dir logged"
				sleep 0.3
				[ "$(maillog_connects "$TB_C1_IP4")" = "$npf" ] ||
					fail "$what: the connection reached Postfix" ;;
			outgoing/proxy)
				# honoured: live relay, the sink's banner relayed
				expect_glob "$what" "$r" "BANNER 220 ext.example.net*"
				wait_for eval '[ "$(sessions "$ip" $dir)" -gt "$ns" ]' ||
					fail "$what: no session with dir=$dir logged (was it passed?)"
				# not honoured: the gateway's own banner
				setmode $dir $act $via "client-server default ignore"
				ns=$(sessions "$ip" $dir)
				r=$(tb_banner c1 "$ip" 25 3)
				expect_glob "$what, client-server ignore" "$r" "BANNER 220 gw.example.com*"
				wait_for eval '[ "$(sessions "$ip" $dir)" -gt "$ns" ]' ||
					fail "$what, client-server ignore: no session with dir=$dir logged" ;;
			incoming/pass)
				expect_glob "$what" "$r" "BANNER 220 mx.example.com ESMTP*"
				wait_for eval '[ "$(maillog_connects "$TB_C1_IP4")" -gt "$npf" ]' ||
					fail "$what: Postfix's log does not show the real client $TB_C1_IP4"
				[ "$(sessions "$ip" $dir)" = "$ns" ] ||
					fail "$what: the daemon took the session" ;;
			outgoing/pass)
				expect_glob "$what" "$r" "BANNER 220 ext.example.net*"
				tb_smtp_send c1 "$ip" alice@example.com someone@example.net "$subj" ||
					fail "$what: SMTP: $(tail -n 1 "$TB_STATE/smtp.out")"
				wait_for mail_has "$TB_EXT_DIR" "$subj" ||
					fail "$what: the ext sink did not receive the message"
				f=$(mail_file "$TB_EXT_DIR" "$subj")
				grep -q "^X-Client-Addr: $TB_C1_IP4\$" "$f" ||
					fail "$what: the ext sink saw $(sed -n 's/^X-Client-Addr: //p' "$f"), not $TB_C1_IP4"
				[ "$(sessions "$ip" $dir)" = "$ns" ] ||
					fail "$what: the daemon took the session" ;;
			*/drop)
				expect_glob "$what" "$r" REFUSED RESET TIMEOUT EOF
				sleep 0.3
				[ "$(maillog_connects "$TB_C1_IP4")" = "$npf" ] ||
					fail "$what: a connection reached Postfix"
				[ "$(sink_count "$TB_EXT_DIR")" = "$next" ] ||
					fail "$what: something reached the ext sink"
				[ "$(sessions "$ip" $dir)" = "$ns" ] ||
					fail "$what: the daemon took the session" ;;
			esac
		done
	done
done

# at least 2 of each: one set in the port block, one by the default
mxb_stats_expect nfq_incoming_proxy -ge 2 nfq_incoming_pass -ge 2 nfq_incoming_drop -ge 2 \
	nfq_outgoing_proxy -ge 2 nfq_outgoing_pass -ge 2 nfq_outgoing_drop -ge 2
mxb_down
pass "incoming/outgoing x proxy/pass/drop, via port block and via default"
