#!/bin/bash
# t-ctl-answer: mxbridgectl against a fake control socket (a python3
# AF_UNIX server answering each connection with given bytes, then
# closing) checks the daemon's answer before using it:
#   - "OK\n..." prints the text, exit 0; "ERR\n..." the reason on stderr,
#     exit 1;
#   - no newline ("garbage", "ERR refused"), another first word, a NUL
#     byte, an escape sequence: "malformed answer from the daemon", the
#     bytes shown escaped, exit 2 -- never a crash (it used to do
#     arithmetic on strchr's NULL when there was no newline);
#   - nothing at all: "no answer from the daemon", exit 2.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need python3 timeout
BIN=${MXB_BIN:-$TB_REPO/build}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
TMP=$(mktemp -d /tmp/t-ctl-answer.XXXXXX) || fail "mktemp"
SRV=
cleanup() {
	[ -n "$SRV" ] && { kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null; }
	rm -rf "$TMP"
}
trap cleanup EXIT

# serve ANSWER-HEX: one connection, reads the request line, answers, closes
FAKE_PY='
import os, socket, sys
path, ans = sys.argv[1], bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path + ".new"); os.rename(path + ".new", path); s.listen(1)
c, _ = s.accept()
req = b""
while not req.endswith(b"\n"):
    d = c.recv(1024)
    if not d:
        break
    req += d
open(path + ".req", "wb").write(req)
c.sendall(ans); c.close(); s.close(); os.unlink(path)
'
# ask ANSWER-BYTES (printf format): run "mxbridgectl status" against it;
# OUT, ERR and RC are what it printed and its exit status
ask() {
	local hex
	hex=$(printf "$1" | od -An -tx1 | tr -d ' \n')
	rm -f "$TMP/s" "$TMP/s.req"
	python3 -c "$FAKE_PY" "$TMP/s" "$hex" &
	SRV=$!
	wait_for test -S "$TMP/s" || fail "fake control socket did not start"
	timeout 10 "$BIN/mxbridgectl" -s "$TMP/s" status >"$TMP/out" 2>"$TMP/err"
	RC=$?
	wait "$SRV"; SRV=
	OUT=$(cat "$TMP/out"); ERR=$(cat "$TMP/err")
	[ "$(cat "$TMP/s.req" 2>/dev/null)" = status ] || fail "request was not 'status'"
}
expect() {	# WHAT RC ERR-PATTERN
	[ "$RC" = "$2" ] || fail "$1: exit $RC, want $2 (stderr: $ERR)"
	case $ERR in "$3") ;; *) fail "$1: stderr '$ERR', want '$3'" ;; esac
}

ask 'OK\nversion=9\n'
expect "OK" 0 ""
[ "$OUT" = "version=9" ] || fail "OK: printed '$OUT'"
ask 'ERR\nnot today\n'
expect "ERR" 1 "not today"
[ -z "$OUT" ] || fail "ERR printed on stdout: $OUT"

M="mxbridgectl: malformed answer from the daemon at $TMP/s: "
ask 'garbage without a newline'
expect "no newline" 2 "$M\"garbage without a newline\""
ask 'ERR refused'
expect "ERR without a newline" 2 "$M\"ERR refused\""
ask 'OK'
expect "OK without a newline" 2 "$M\"OK\""
ask 'HELLO\nworld\n'
expect "another word" 2 "$M\"HELLO\\x0aworld\\x0a\""
ask 'OK\nx\000y\n'
expect "NUL byte" 2 "$M\"OK\\x0ax\\x00y\\x0a\""
ask '\033[31mOK\n'
expect "escape sequence" 2 "$M\"\\x1b[31mOK\\x0a\""
[ -z "$OUT" ] || fail "a malformed answer printed on stdout: $OUT"
ask ''
expect "nothing" 2 "mxbridgectl: no answer from the daemon"
pass "OK, ERR, malformed answers refused with exit 2, no answer"
