#!/bin/bash
# t-ctl-perms: who may use the control socket, and what it takes.
#   1. with "group G" the socket is mode 0660, group G; a user in G
#      (uid 64123, supplementary group G, through setpriv) gets status;
#   2. a user outside G cannot connect (the mode), and with the socket
#      made 0666 by hand, still gets "permission denied" from the daemon
#      (SO_PEERCRED / SO_PEERGROUPS), which logs the refused uid;
#   3. a user whose primary group is G gets status;
#   4. root gets status; a queue id that is not 16 hex digits ("../x",
#      300 bytes, upper case) is refused before any lookup, and a word
#      with a control byte is refused as a bad request;
#   5. "group" naming no group is a config error (-n), with its name.
. "$(dirname "$0")/t-mta-common.inc"
need setpriv groupadd groupdel

G=mxbctl$$
groupadd "$G" || fail "groupadd $G"
TB_ATEXIT="groupdel $G 2>/dev/null; rm -rf '${CD:-/nonexistent}'"
GID=$(getent group "$G" | cut -d: -f3)
[ -n "$GID" ] || fail "no gid for $G"
# a folder everyone may cross (the testbed's own is 0700)
CD=$(mktemp -d /tmp/t-ctl-perms.XXXXXX) || fail "mktemp"
TB_ATEXIT="groupdel $G 2>/dev/null; rm -rf '$CD'"
chmod 0755 "$CD"
SOCK=$CD/ctl.sock
# the tool where any user may run it (the checkout may sit under /root)
cp "$BIN/mxbridgectl" "$CD/mxbridgectl" && chmod 0755 "$CD/mxbridgectl" || fail "copy mxbridgectl"

mta_conf "group $G"
sed -i "s|^control .*|control \"$SOCK\"|" "$S/run.conf"
mxb_start "$S/run.conf" || fail "daemon did not start: $(tail -n 3 "$TB_MXB_LOG")"
wait_for test -S "$SOCK" || fail "no control socket"

# as UID [GROUPS [GID]]: mxbridgectl status as another user
as() {
	local uid=$1 groups=${2:-} gid=${3:-$1}
	if [ -n "$groups" ]; then
		setpriv --reuid="$uid" --regid="$gid" --groups="$groups" \
			"$CD/mxbridgectl" -s "$SOCK" status
	else
		setpriv --reuid="$uid" --regid="$gid" --clear-groups \
			"$CD/mxbridgectl" -s "$SOCK" status
	fi
}

# 1. mode and group; a member
m=$(stat -c '%a %g' "$SOCK")
[ "$m" = "660 $GID" ] || fail "socket is '$m', want '660 $GID'"
out=$(as 64123 "$GID" 2>&1) || fail "a member of $G was refused: $out"
echo "$out" | grep -q '^state=running' || fail "member's status: $out"

# 2. an outsider: the mode, then the daemon's own check
out=$(as 64124 2>&1) && fail "an outsider connected through mode 0660: $out"
echo "$out" | grep -qi 'permission denied' || fail "outsider's error: $out"
chmod 0666 "$SOCK"
out=$(as 64124 2>&1) && fail "an outsider was served with the socket 0666: $out"
echo "$out" | grep -q 'permission denied' || fail "no 'permission denied' from the daemon: $out"
wait_for grep -q 'control: refused peer uid=64124 ' "$TB_MXB_LOG" ||
	fail "no log line for the refused peer: $(grep control: "$TB_MXB_LOG" | tail -n 2)"

# 3. primary group G
out=$(as 64125 "" "$GID" 2>&1) || fail "a user whose group is $G was refused: $out"
chmod 0660 "$SOCK"

# 4. root; arguments
out=$("$BIN/mxbridgectl" -s "$SOCK" status 2>&1) || fail "root refused: $out"
for bad in "../../etc/passwd" "$(printf 'a%.0s' $(seq 300))" "0661DA5201E4ED00" "0661da52"; do
	out=$("$BIN/mxbridgectl" -s "$SOCK" queue show "$bad" 2>&1) &&
		fail "queue show '$bad' was answered: $out"
	echo "$out" | grep -Eq 'not a queue id|bad request' ||
		fail "queue show '${bad:0:40}': $out"
done
out=$(printf 'queue show \001x\n' | timeout 5 python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read()); print(s.recv(4096).decode(errors="replace"))' "$SOCK")
echo "$out" | grep -q '^ERR' && echo "$out" | grep -q 'bad request' ||
	fail "a control byte in a word: $out"
wait_for grep -q 'control: queue show refused: not a queue id: \.\./\.\./etc/passwd' "$TB_MXB_LOG" ||
	fail "no log line for the refused queue id: $(grep 'control:' "$TB_MXB_LOG" | tail -n 3)"
grep -q 'control: bad request refused' "$TB_MXB_LOG" ||
	fail "no log line for the bad request: $(grep 'control:' "$TB_MXB_LOG" | tail -n 3)"
kill -0 "$(tr -dc 0-9 <"$TB_MXB_PIDFILE")" || fail "the daemon died"
mxb_stop 10 || fail "daemon needed SIGKILL"

# 5. a group that does not exist
mta_conf "group no-such-group-$$"
out=$("$BIN/mxbridge" -n -f "$S/run.conf" 2>&1) && fail "-n took a group that does not exist"
echo "$out" | grep -q "group: no such group \"no-such-group-$$\"" || fail "-n said: $out"

pass "control socket: 0660 with its group, members (supplementary or primary) served, others refused by the mode and by the daemon's peer check, queue ids and words validated, an unknown group refused by -n"
