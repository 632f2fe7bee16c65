#!/bin/bash
# t-spool-perms: the daemon refuses a spool someone else could write to
# (queue files are read back and delivered: whoever writes there can make
# the box send mail), each with a message naming the folder and the fix:
#   1. the spool folder writable by others (0777), or by its group (0770);
#   2. the spool folder owned by another user, root included (the daemon
#      runs as its user, mxbridge.conf(5) "user");
#   3. a symbolic link in place of the spool or of one of its folders
#      (queue/);
#   4. a subfolder writable by others;
# and starts with the folders 0700 and its user's (then tmp/, queue/, ...
# exist 0700).
. "$(dirname "$0")/t-mta-common.inc"
mta_conf
SP=$S/spool

# refused WHY...: the daemon exits at start, its log says WHY
refused() {
	local out
	out=$(tb_exec box timeout 20 "$BIN/mxbridge" -d -f "$S/run.conf" 2>&1) &&
		fail "started with $*"
	echo "$out" | grep -Eq -- "$1" || fail "no '$1' when refused: $(echo "$out" | tail -n 3)"
	echo "$out" | grep -Eq "Sanitizer|runtime error" &&
		fail "sanitizer report on the refused start: $(echo "$out" | grep -Em1 -A5 'Sanitizer|runtime error')"
	return 0
}

chmod 0777 "$SP"
refused "spool: $SP is writable by others \(mode 0777\): refusing it \(chmod 0700 it\)"
chmod 0770 "$SP"
refused "spool: $SP is writable by its group \(mode 0770\)"
chmod 0700 "$SP"
chown 64123 "$SP"
U=$(id -u "$MXB_USER")
refused "spool: $SP belongs to uid 64123, not to the daemon's uid $U"
chown 0 "$SP"
refused "spool: $SP belongs to uid 0, not to the daemon's uid $U"
chown "$MXB_USER" "$SP"
mv "$SP" "$SP.real"
ln -s "$SP.real" "$SP"
refused "spool: $SP is not a directory \(a symbolic link\)"
rm "$SP"
mv "$SP.real" "$SP"

# a good start makes the folders; then one of them is made unsafe
mxb_start "$S/run.conf" || fail "did not start with a 0700 spool: $(tail -n 3 "$TB_MXB_LOG")"
wait_for grep -q "mta: started" "$TB_MXB_LOG" || fail "mta did not start: $(tail -n 3 "$TB_MXB_LOG")"
for d in tmp queue free corrupt dead; do
	[ "$(stat -c %a:%U "$SP/$d")" = "700:$MXB_USER" ] ||
		fail "$SP/$d is $(stat -c %a:%U "$SP/$d"), want 700:$MXB_USER"
done
mxb_stop 10 || fail "daemon needed SIGKILL"
chmod 0733 "$SP/queue"
refused "spool: $SP/queue is writable by others \(mode 0733\)"
chmod 0700 "$SP/queue"
mv "$SP/queue" "$SP/queue.real"
ln -s "$SP/queue.real" "$SP/queue"
refused "spool: $SP/queue is not a directory \(a symbolic link\)"
rm "$SP/queue"
mv "$SP/queue.real" "$SP/queue"
mxb_start "$S/run.conf" || fail "did not start again with the folders fixed: $(tail -n 3 "$TB_MXB_LOG")"
mxb_stop 10 || fail "daemon needed SIGKILL"
pass "spool: refused when writable by others or its group, owned by another user, or a symbolic link (the spool or a subfolder), with the fix named; starts with 0700 folders of its own"
