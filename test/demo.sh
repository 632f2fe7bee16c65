#!/bin/bash
# demo.sh - the product's main job on a built-in default: bring up the
# namespace testbed, set up the bridge interception, start mxbridge with a
# sample configuration, send mail through it both ways, and show what
# happened to each message.  Everything is torn down at the end.
. "$(dirname "$0")/lib.sh"
BIN=${MXB_BIN:-$TB_REPO/build}
NF=$TB_REPO/scripts/mxbridge-netfilter

say() { printf '\n== %s\n' "$*"; }
tb_init "mxdemo$$"
trap 'tb_exec box "$NF" down -b br0 >/dev/null 2>&1; tb__cleanup' EXIT

S=$TB_STATE/demo
mxb_statedir "$S"
cat >"$S/mxbridge.conf" <<CONF
# demo configuration: example.com is protected (its server 192.0.2.10 is
# behind the bridge); clients of 192.0.2.0/24 may send mail out.
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number 0
listen incoming port 10025
listen outgoing port 10026

domain "example.com" {
	server 192.0.2.10 port 25
}
# client 2 may not pick its own server: its mail goes through the MTA
ignore client-server from 192.0.2.102
queue {
	retry-min 10s
}
match client 192.0.2.0/24 relay
match client 2001:db8:2::/64 relay
CONF

say "configuration ($S/mxbridge.conf)"
cat "$S/mxbridge.conf"
"$BIN/mxbridge" -n -f "$S/mxbridge.conf" || exit 1

say "bridge interception: mxbridge-netfilter up"
tb_exec box "$NF" up -b br0 -q 0 -i 10025 -o 10026 -F open || exit 1
mxb_start "$S/mxbridge.conf" || { cat "$TB_MXB_LOG"; exit 1; }
wait_for test -S "$S/ctl.sock"

# send NAME NODE SERVER FROM TO: one message with swaks, and its replies
send() {
	local name=$1 node=$2 server=$3 from=$4 to=$5
	say "message $name: $node -> $server, MAIL FROM:<$from> RCPT TO:<$to>"
	tb_exec "$node" swaks --server "$server" --from "$from" --to "$to" \
	    --helo "$node.example.org" --header "Subject: demo $name" \
	    --timeout 15 >"$S/swaks.$name" 2>&1
	echo "swaks exit $?; the server's replies as the client saw them:"
	grep -E '^ *<[-~]' "$S/swaks.$name" | sed 's/^/    /'
}
send 1 c1 192.0.2.10 carol@example.org alice@example.com
send 2 c1 192.0.2.20 alice@example.com dave@example.net
send 3 c2 192.0.2.20 bob@example.com erin@example.net
if tb_have_swaks6; then
	send 4 c1 2001:db8:2::20 alice@example.com frank@example.net
fi

say "the protected server goes down; the gateway keeps taking its mail"
tb_postfix stop >/dev/null 2>&1
send 5 c2 192.0.2.10 erin@example.org bob@example.com
say "mxbridgectl queue list (server down: queued, next attempt shown)"
tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" queue list 2>&1 | sed 's/^/    /'
say "the server is back: mxbridgectl queue flush"
tb_postfix start >/dev/null 2>&1
wait_for -t 5 tb_banner srv 192.0.2.10 25 >/dev/null 2>&1
tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" queue flush 2>&1 | sed 's/^/    /'
wait_for -t 10 maildir_count bob -ge 1

sleep 1
say "where the messages arrived"
printf '    %-44s %s\n' "alice's Maildir at mx.example.com (192.0.2.10)" "$(maildir_count alice)"
printf '    %-44s %s\n' "bob's Maildir at mx.example.com" "$(maildir_count bob)"
printf '    %-44s %s\n' "outside server 192.0.2.20 (client's choice)" "$(sink_count "$TB_EXT_DIR")"
printf '    %-44s %s\n' "mx.example.net 192.0.2.21 (MX of example.net)" "$(sink_count "$TB_MX_DIR")"
printf '    %-44s %s\n' "relay host 192.0.2.30" "$(sink_count "$TB_RELAY_DIR")"

say "mxbridgectl queue list"
tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" queue list 2>&1 | sed 's/^/    /'
say "mxbridgectl stats"
tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" stats 2>&1 | sed 's/^/    /'
say "what the daemon logged (message-level lines)"
grep -E "session=|msgid=" "$TB_MXB_LOG" | grep -Ev " state [a-z]+ -> |upstream=.* state " |
    cut -c25- | sed 's/^/    /'
say "the protected server's Postfix log (real client addresses)"
grep -E 'postfix/smtpd.*connect from|status=sent' "$TB_MAILLOG" | cut -c1-160 |
    sed 's/^/    /'
mxb_stop
say "done; tearing the testbed down"
