#!/usr/bin/env bash
# shellcheck disable=SC2119,SC2317
# Plain bridge, no interception: c1 sends to the protected Postfix across
# the appliance bridge over IPv4 and IPv6; the mail lands in the Maildir and
# Postfix sees the real client address.
# shellcheck source=test/lib.sh
. "$(dirname "$0")/../lib.sh"
need swaks
tb_init

# IPv4, swaks
tb_swaks c1 --server "$TB_SRV_IP4" -f sender@example.org -t alice@example.com \
	--header "Subject: t-bridge-postfix v4" ||
	fail "swaks over IPv4: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
wait_for maildir_count alice -ge 1 || fail "IPv4 message not in alice's Maildir"
maillog_has "client=unknown\[$TB_C1_IP4\]" ||
	fail "maillog does not show client $TB_C1_IP4"
grep -rqs "t-bridge-postfix v4" "$TB_MAILDIR/alice/new" || fail "IPv4 message content not found"

# IPv6 (swaks needs IO::Socket::INET6; python3 smtplib otherwise)
if tb_have_swaks6; then
	tb_swaks c1 -6 --server "$TB_SRV_IP6" -f sender@example.org -t alice@example.com \
		--header "Subject: t-bridge-postfix v6" ||
		fail "swaks over IPv6: $(grep -m1 -E '^(<\*\*|\*\*\*)' "$TB_STATE/swaks.out")"
else
	note "no IO::Socket::INET6 for swaks -6 (libio-socket-inet6-perl); using python3 smtplib"
	tb_smtp_send c1 "$TB_SRV_IP6" sender@example.org alice@example.com "t-bridge-postfix v6" ||
		fail "smtplib over IPv6: $(tail -n 1 "$TB_STATE/smtp.out")"
fi
wait_for maildir_count alice -ge 2 || fail "IPv6 message not in alice's Maildir"
maillog_has "client=unknown\[$TB_C1_IP6\]" ||
	fail "maillog does not show client $TB_C1_IP6"

# unknown user: 550 at RCPT
tb_swaks c1 --server "$TB_SRV_IP4" -f sender@example.org -t nosuchuser@example.com &&
	fail "unknown recipient accepted"
grep -q '^<\*\* *550' "$TB_STATE/swaks.out" || fail "unknown recipient not rejected with 550"

pass "delivered over IPv4 and IPv6 across the bridge, client address preserved"
