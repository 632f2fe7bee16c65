#!/bin/bash
# t-feature-tobox: SMTP addressed to the gateway's own address (192.0.2.2)
# through bridge port p0.  With accept-to-box no (the default) it is
# refused and classified as a drop; with yes the built-in MTA takes the
# mail (never a live relay to the box itself) and delivers it by MX.
. "$(dirname "$0")/../lib.sh"
tb_init
mxb_setup
conf=$MXB_DIR/mxbridge.conf

mxb_conf_write "$conf" proxy proxy
echo 'match client 192.0.2.0/24 relay' >>"$conf"
mxb_nf_up open
mxb_start_queue "$conf"

got=$(tb_banner c1 "$TB_BOX_IP4" 25 3)
expect_glob "accept-to-box no" "$got" "REFUSED*" "RESET*"
mxb_stats_expect nfq_outgoing_drop -eq 1
grep -q "session=.*orig_dst=$TB_BOX_IP4:25" "$TB_MXB_LOG" &&
	fail "a session reached the listener for the refused connection"

# accept-to-box yes on p0: the MTA takes it and routes by MX
sed -i 's/^\toutgoing proxy$/\toutgoing proxy\n\taccept-to-box yes/' "$conf"
grep -q "accept-to-box yes" "$conf" || fail "config edit failed"
mxb_reload
got=$(tb_banner c1 "$TB_BOX_IP4" 25 3)
expect_glob "accept-to-box yes" "$got" "BANNER 220 gw.example.com*"
tb_swaks c1 --server "$TB_BOX_IP4" --from carol@example.org \
	--to alice@example.com,dave@example.net ||
	fail "swaks to the box: $(tail -n 5 "$TB_STATE/swaks.out")"
grep -q "queued as" "$TB_STATE/swaks.out" || fail "no queue id in the 250"
grep -q "orig_dst=$TB_BOX_IP4:25 dir=outgoing path=mta" "$TB_MXB_LOG" ||
	fail "session to the box did not take the MTA path"
wait_for maildir_count alice -ge 1 || fail "alice (MX of example.com) got nothing"
wait_for sink_count "$TB_MX_DIR" -ge 1 || fail "MX of example.net got nothing"
[ "$(sink_count "$TB_EXT_DIR")" -eq 0 ] || fail "something went to 192.0.2.20"
mxb_sancheck
pass "refused by default; accepted into the MTA with accept-to-box yes"
