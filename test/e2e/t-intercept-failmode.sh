#!/bin/bash
# t-intercept-failmode: what SMTP meets when the daemon is not there.
#   - fail-open (-F open): daemon killed with SIGKILL, SMTP from c1 reaches
#     Postfix untouched (mail delivered, real client in its log); the same
#     after a graceful stop; a restarted daemon takes the queue back;
#   - fail-closed (-F closed): daemon killed, SMTP is refused within a few
#     seconds and nothing reaches Postfix;
#   - "mxbridge-netfilter status" counts the flows that met no daemon
#     (0 while it runs; passed under fail-open, refused under fail-closed).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
mxb_setup

# proxied MSG: c1's SMTP to srv meets the daemon's own banner
proxied() { expect_glob "$1" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"; }
# reaches_postfix MSG: c1's SMTP to srv meets Postfix's banner
reaches_postfix() {
	expect_glob "$1" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 mx.example.com ESMTP*"
}

mxb_conf_write "$MXB_DIR/run.conf" proxy proxy
# nodaemon FAMILY [WORD]: status's count of new SMTP flows that met no
# daemon (WORD: passed or refused, as the status line must say)
nodaemon() {
	tb_exec box bash "$MXB_NF" status 2>/dev/null |
		sed -n "s/^# IPv$1 new SMTP flows that met no daemon (${2:-[a-z]*}): //p"
}
mxb_nf_up open
mxb_start_queue "$MXB_DIR/run.conf"
proxied "daemon up, fail-open"
[ "$(nodaemon 4 passed)" = 0 ] || fail "status: '$(nodaemon 4)' flows met no daemon while it ran, want 0"

# 1. fail-open: SIGKILL, then SMTP reaches Postfix untouched
mxb_kill
t0=$SECONDS
reaches_postfix "fail-open after SIGKILL"
tb_smtp_send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-intercept fail-open" ||
	fail "SMTP with the daemon killed: $(tail -n 1 "$TB_STATE/smtp.out")"
[ $((SECONDS - t0)) -le 5 ] || fail "fail-open took $((SECONDS - t0)) s"
wait_for maildir_count alice -ge 1 || fail "mail not delivered with the daemon killed"
maillog_has "client=unknown\[$TB_C1_IP4\]" || fail "Postfix did not see client $TB_C1_IP4"
nd=$(nodaemon 4 passed)
[ -n "$nd" ] && [ "$nd" -ge 2 ] ||
	fail "status: '$nd' flows counted as passed without a daemon, want >= 2 (the banner, the mail)"

# 2. a new daemon takes the queue back; after a graceful stop, fail-open too
mxb_start_queue "$MXB_DIR/run.conf"
proxied "restarted daemon"
mxb_stats_expect nfq_incoming_proxy -eq 1
mxb_stop || fail "daemon needed SIGKILL"
reaches_postfix "fail-open after SIGTERM"

# 3. fail-closed: SIGKILL, then SMTP is refused and reaches nothing
mxb_nf_up closed
mxb_start_queue "$MXB_DIR/run.conf"
proxied "daemon up, fail-closed"
[ "$(nodaemon 4 refused)" = 0 ] || fail "status: '$(nodaemon 4)' flows met no daemon while it ran (fail-closed), want 0"
mxb_kill
n=$(maillog_connects "$TB_C1_IP4")
t0=$SECONDS
expect_glob "fail-closed after SIGKILL" "$(tb_banner c1 "$TB_SRV_IP4" 25 5)" \
	REFUSED RESET TIMEOUT EOF
[ $((SECONDS - t0)) -le 6 ] || fail "fail-closed answer took $((SECONDS - t0)) s"
expect_glob "fail-closed (IPv6) after SIGKILL" "$(tb_banner c1 "$TB_SRV_IP6" 25 5)" \
	REFUSED RESET TIMEOUT EOF
sleep 0.5
[ "$(maillog_connects "$TB_C1_IP4")" = "$n" ] || fail "fail-closed: a connection reached Postfix"
nd=$(nodaemon 4 refused) nd6=$(nodaemon 6 refused)
[ -n "$nd" ] && [ "$nd" -ge 1 ] && [ -n "$nd6" ] && [ "$nd6" -ge 1 ] ||
	fail "status: '$nd' IPv4 and '$nd6' IPv6 flows counted as refused without a daemon, want >= 1 each"
# non-SMTP still crosses
tbd_pingall c1 "$TB_SRV_IP4" >/dev/null || fail "ping with fail-closed and no daemon"
mxb_sancheck
pass "fail-open (SIGKILL, SIGTERM), restart, fail-closed; status counts the flows that met no daemon"
