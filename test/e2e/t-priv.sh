#!/bin/bash
# t-priv: the daemon runs as its user, with one capability, sandboxed.
#   1. -n refuses a user that does not exist, naming it and the fix;
#   2. started as root, it logs the change; then every thread of it
#      (the daemon's, the workers', libuv's pool, after a message went
#      through so the pool exists) has: uid and gid the user's in all
#      four places, no supplementary group, CapEff and CapPrm exactly
#      CAP_NET_ADMIN, an empty bounding and ambient set, NoNewPrivs 1,
#      Seccomp 2 (a filter);
#   3. the message it queued (its Postfix stopped) is in spool files of
#      the user, mode 0600;
#   4. a reload that moves a listener below 1024 is refused, naming the
#      missing capability; one that names another user keeps the running
#      one with a warning; the daemon still answers afterwards;
#   5. started as its user with CAP_NET_ADMIN ambient, as mxbridge.service
#      does: every thread as in 2 (the bounding set is systemd's, here
#      CAP_NET_ADMIN); started as its user without it: refused, clearly.
. "$(dirname "$0")/t-mta-common.inc"

# 1. no such user
sed 's/^x//' >"$S/nouser.conf" <<EOF
xspool "$S/spool"
xuser "no-such-user-mxb"
EOF
out=$("$BIN/mxbridge" -n -f "$S/nouser.conf" 2>&1) && fail "-n passed with a missing user"
echo "$out" | grep -q "user no-such-user-mxb: no such user .*adduser --system --group no-such-user-mxb" ||
	fail "-n did not name the missing user and the fix: $out"

mta_conf "domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}"
mta_up
log_has "privileges: user=$MXB_USER uid=$(id -u "$MXB_USER") gid=$(id -g "$MXB_USER") capabilities=cap_net_admin" ||
	fail "no privileges line: $(grep -m1 privileges "$TB_MXB_LOG")"

# 3. (first, so that libuv's pool has threads for 2) a queued message
tb_postfix stop >/dev/null 2>&1
wait_for eval '! tbd_listening_tcp srv ":25" 25' || fail "postfix did not stop"
send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-priv queued" ||
	fail "not queued: $(cat "$S/send.out")"
id=$(sed -n 's/.*queued as \([0-9a-f]\{16\}\).*/\1/p' "$S/send.out")
[ -n "$id" ] || fail "no queue id: $(cat "$S/send.out")"
n=0
for f in $(find "$S/spool" -type f); do
	[ "$(stat -c %U:%a "$f")" = "$MXB_USER:600" ] ||
		fail "spool file $f is $(stat -c %U:%a "$f"), want $MXB_USER:600"
	n=$((n + 1))
done
[ "$n" -ge 1 ] || fail "no spool file for $id"

# threads_ok PID: every thread of PID as above; sets nt to their number
threads_ok() {
	local t st name uid gid
	uid=$(id -u "$MXB_USER") gid=$(id -g "$MXB_USER")
	nt=0
	for t in /proc/"$1"/task/*; do
		st=$(cat "$t/status") || fail "cannot read $t/status"
		name=$(echo "$st" | sed -n 's/^Name:[[:space:]]*//p')
		want() {
			local v
			v=$(echo "$st" | sed -n "s/^$1:[[:space:]]*//p" | tr -s '[:space:]' ' ' | sed 's/ $//')
			[ "$v" = "$2" ] || fail "thread ${t##*/} ($name): $1 is '$v', want '$2'"
		}
		want Uid "$uid $uid $uid $uid"
		want Gid "$gid $gid $gid $gid"
		want Groups ""
		want CapEff 0000000000001000
		want CapPrm 0000000000001000
		want CapInh 0000000000000000
		want CapBnd "$3"
		want CapAmb 0000000000000000
		want NoNewPrivs 1
		want Seccomp 2
		nt=$((nt + 1))
	done
	# the daemon's thread, a worker or more, and libuv's pool
	[ "$nt" -ge "$2" ] || fail "only $nt threads: $(ls /proc/"$1"/task)"
}

# 2. every thread; the bounding set is empty too (the daemon cleared it)
pid=$(cat "$TB_MXB_PIDFILE")
uid=$(id -u "$MXB_USER")
threads_ok "$pid" 3 0000000000000000

# 4. reloads that need what the daemon gave up
cp "$S/run.conf" "$S/good.conf"
sed -i 's/^listen outgoing port 10026$/listen outgoing port 587/' "$S/run.conf"
out=$(ctl reload 2>&1) && fail "reload to port 587 accepted: $out"
echo "$out" | grep -q "reload refused: listen outgoing port 587: a port below 1024 needs CAP_NET_BIND_SERVICE" ||
	fail "reload to port 587: $out"
log_has "reload refused, keeping the running configuration: listen outgoing port 587" ||
	fail "refused reload not logged"
cp "$S/good.conf" "$S/run.conf"
echo 'user "nobody"' >>"$S/run.conf"
out=$(ctl reload 2>&1) || fail "reload naming another user refused: $out"
log_has "reload: user changes need a restart; the daemon stays user $MXB_USER" ||
	fail "no warning for the user change"
[ "$(awk '/^Uid:/ {print $2}' /proc/"$pid"/status)" = "$uid" ] || fail "the reload changed the uid"
cp "$S/good.conf" "$S/run.conf"
ctl status | grep -q "^state=running" || fail "no status after the reloads"
tb_postfix start >/dev/null 2>&1
mta_down

# 5. started as systemd's unit starts it: as the user, CAP_NET_ADMIN
#    ambient (mxbridge.service); and without that capability: refused
setpriv=(setpriv --reuid="$MXB_USER" --regid="$MXB_USER" --clear-groups)
MXB_WRAP="${setpriv[*]} --inh-caps=+net_admin --ambient-caps=+net_admin --bounding-set=-all,+net_admin"
export MXB_WRAP
mxb_start "$S/run.conf" || fail "did not start as $MXB_USER with CAP_NET_ADMIN: $(tail -n 3 "$TB_MXB_LOG")"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" || fail "queue not open as $MXB_USER: $(tail -n 5 "$TB_MXB_LOG")"
threads_ok "$(cat "$TB_MXB_PIDFILE")" 2 0000000000001000
ctl status | grep -q "^state=running" || fail "no status from the daemon started as $MXB_USER"
mxb_stop 10 || fail "daemon needed SIGKILL"
unset MXB_WRAP
out=$(tb_exec box "${setpriv[@]}" --inh-caps=-all "$BIN/mxbridge" -d -f "$S/run.conf" 2>&1) &&
	fail "started as $MXB_USER without CAP_NET_ADMIN"
echo "$out" | grep -q "started as user $MXB_USER without CAP_NET_ADMIN" ||
	fail "no clear refusal without CAP_NET_ADMIN: $(echo "$out" | tail -n 2)"
pass "the daemon and its threads (as root, or as systemd starts it): user $MXB_USER, CAP_NET_ADMIN only, no new privileges, a seccomp filter; spool files its own 0600; -n names a missing user; reloads needing a low port refused"
