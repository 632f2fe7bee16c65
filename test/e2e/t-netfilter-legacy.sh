#!/bin/bash
# t-netfilter-legacy: mxbridge-netfilter with the legacy build of iptables,
# called by name (-B iptables-legacy), in the box of a testbed:
#   - up finishes (it used to deadlock: iptables-restore held the xtables
#     lock while the generator feeding it waited for that lock to list);
#   - the rules are in iptables-legacy-save and ip6tables-legacy-save, not
#     in the nf_tables build nor in nft tables of ours; status says up;
#   - interception works: SMTP from c1 lands on the daemon's listener;
#   - a second up keeps one jump per chain;
#   - down removes every rule (c1 reaches Postfix itself), status says down;
#   - with the xtables lock held by another process, up fails with a
#     message naming the lock within a bounded time (-w 2), and down
#     afterwards leaves nothing.
# The lock file is private to the test (XTABLES_LOCKFILE), so the host's
# /run/xtables.lock is never held.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables-legacy ip6tables-legacy iptables-legacy-save ip6tables-legacy-save \
	iptables-legacy-restore iptables-nft-save nft timeout
tb_init
mxb_setup
NFARGS="-B iptables-legacy -b br0 -q $MXB_QUEUE -W $MXB_WORKERS -i 10025 -o 10026 -F open"
LOCKPID=

nf() { tb_exec box bash "$MXB_NF" "$@"; }
legacy_rules() { tb_exec box iptables-legacy-save 2>/dev/null | grep -c MXBRIDGE; }
legacy6_rules() { tb_exec box ip6tables-legacy-save 2>/dev/null | grep -c MXBRIDGE; }
stop_holder() {
	[ -n "$LOCKPID" ] || return 0
	kill "$LOCKPID" 2>/dev/null
	wait "$LOCKPID" 2>/dev/null
	LOCKPID=
}
TB_ATEXIT=stop_holder

# 1. up with the legacy back end finishes, in bounded time
timeout 60 ip netns exec "$(tb_ns box)" bash "$MXB_NF" up $NFARGS >"$MXB_DIR/nf.log" 2>&1
rc=$?
[ $rc = 124 ] && fail "up -B iptables-legacy hung (deadlock on the xtables lock)"
[ $rc = 0 ] || fail "up -B iptables-legacy: rc=$rc $(tail -n 3 "$MXB_DIR/nf.log")"

# 2. the rules are where the legacy build keeps them, and nowhere else
save=$(tb_exec box iptables-legacy-save -t mangle 2>/dev/null)
echo "$save" | grep -qx -- "-A PREROUTING -i br0 -j MXBRIDGE" ||
	fail "no jump in legacy mangle PREROUTING: $save"
echo "$save" | grep -Eq -- "-A MXBRIDGE .* -j NFQUEUE --queue-(num $MXB_QUEUE|balance $MXB_QUEUE:)" ||
	fail "no NFQUEUE rule in legacy MXBRIDGE: $save"
tb_exec box iptables-legacy-save -t filter 2>/dev/null | grep -qx -- "-A FORWARD -i br0 -j MXBRIDGE" ||
	fail "no jump in legacy filter FORWARD"
tb_exec box ip6tables-legacy-save -t mangle 2>/dev/null | grep -qx -- "-A PREROUTING -i br0 -j MXBRIDGE" ||
	fail "no jump in legacy ip6 mangle PREROUTING"
[ "$(tb_exec box iptables-nft-save 2>/dev/null | grep -c MXBRIDGE)" = 0 ] ||
	fail "rules in the nf_tables build too"
tb_exec box nft list tables | grep -Eq '^table ip6? mxbridge$' && fail "an nft table of the nft back end"
st=$(nf status) || fail "status after up: $st"
echo "$st" | grep -q "iptables-legacy back end" || fail "status does not name the back end: $(echo "$st" | head -n 1)"

# 3. interception: the daemon answers for the protected server
mxb_conf_write "$MXB_DIR/run.conf" proxy proxy
mxb_start_queue "$MXB_DIR/run.conf"
expect_glob "c1 to $TB_SRV_IP4:25" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 gw.example.com *"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_SRV_IP4:25 dir=incoming" \
	"$TB_MXB_LOG" || fail "no incoming session logged"

# 4. up again: still one jump per chain
n=$(legacy_rules)
nf up $NFARGS >"$MXB_DIR/nf.log" 2>&1 || fail "second up: $(tail -n 3 "$MXB_DIR/nf.log")"
[ "$(legacy_rules)" = "$n" ] || fail "second up changed the rule count ($n -> $(legacy_rules))"

# 5. down: nothing left, c1 reaches Postfix itself
nf down >"$MXB_DIR/nf.log" 2>&1 || fail "down: $(tail -n 3 "$MXB_DIR/nf.log")"
[ "$(legacy_rules)" = 0 ] || fail "down left legacy rules: $(tb_exec box iptables-legacy-save | grep MXBRIDGE)"
[ "$(legacy6_rules)" = 0 ] || fail "down left legacy ip6 rules"
nf status >/dev/null; [ $? = 3 ] || fail "status after down is not 3"
expect_glob "c1 to $TB_SRV_IP4:25 after down" "$(tb_banner c1 "$TB_SRV_IP4")" \
	"BANNER 220 mx.example.com ESMTP*"

# 6. the lock held by someone else: up fails clearly, in bounded time
lock=$TB_STATE/xtables.lock
rm -f "$TB_STATE/lock.ready"
python3 -c '
import fcntl, sys, time
f = open(sys.argv[1], "w")
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(300)
' "$lock" "$TB_STATE/lock.ready" &
LOCKPID=$!
wait_for test -e "$TB_STATE/lock.ready" || fail "lock holder did not start"
t0=$SECONDS
out=$(XTABLES_LOCKFILE=$lock timeout 60 ip netns exec "$(tb_ns box)" \
	bash "$MXB_NF" up $NFARGS -w 2 2>&1)
rc=$?
el=$((SECONDS - t0))
[ $rc = 124 ] && fail "up hung on a held xtables lock"
[ $rc = 1 ] || fail "up with the lock held: rc=$rc, want 1: $out"
echo "$out" | grep -q "xtables lock ($lock) is held by another process; gave up after 2s" ||
	fail "no clear lock message: $out"
[ $el -le 30 ] || fail "up took ${el}s to give up"
stop_holder
nf down >"$MXB_DIR/nf.log" 2>&1 || fail "down after the failed up: $(tail -n 3 "$MXB_DIR/nf.log")"
[ "$(legacy_rules)" = 0 ] || fail "rules left after the failed up and down"
tb_exec box nft list tables | grep -q '^table bridge mxbridge$' && fail "bridge table left"

mxb_down
pass "legacy back end: up, rules, interception, down, bounded lock wait"
