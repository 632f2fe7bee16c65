# shellcheck shell=bash disable=SC2034,SC2119,SC2120
# (variables and optional arguments are for the scripts that source this)
# Helpers for the end-to-end tests on the network-namespace testbed.
# Source it from a test script:
#
#   . "$(dirname "$0")/../lib.sh"
#   tb_init                      # unique testbed, torn down on exit
#   tb_exec c1 swaks ...         # run in a node's namespace
#   wait_for maildir_count alice -ge 1 || fail "not delivered"
#   pass
#
# Exit codes: 0 pass, 1 fail, 77 skip.  See test/README.testbed.

TB_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_REPO=$(cd "$TB_LIB_DIR/.." && pwd)
TB_SCRIPT=$TB_LIB_DIR/testbed.sh
export PATH="$PATH:/usr/sbin:/sbin"

# address variables (TB_C1_IP4 ...) and the tbd_* helpers
# shellcheck source=testbed.sh
. "$TB_SCRIPT"

TB_TEST=$(basename "$0" .sh)

# ---------------------------------------------------------------- verdicts
pass() { [ $# -gt 0 ] && echo "PASS $TB_TEST: $*"; exit 0; }
fail() { echo "FAIL $TB_TEST: ${*:-failed}"; exit 1; }
skip() { echo "SKIP $TB_TEST: ${*:-skipped}"; exit 77; }
note() { echo "# $TB_TEST: $*" >&2; }

# need CMD...: skip the test unless every command exists
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip "needs $c"
	done
}

# ---------------------------------------------------------------- testbed
# tb_use NAME: point the variables at testbed NAME (no up/down)
tb_use() {
	tbd_setname "$1" || fail "bad testbed name $1"
	TB_NAME=$TBD_NAME
	TB_STATE=$TBD_STATE
	TB_MAILDIR=$TB_STATE/srv/mail
	TB_MAILLOG=$TB_STATE/srv/maillog
	TB_POSTFIX_CONF=$TB_STATE/srv/etc
	TB_EXT_DIR=$TB_STATE/out/ext20
	TB_MX_DIR=$TB_STATE/out/mx21
	TB_RELAY_DIR=$TB_STATE/out/relay30
	TB_MXB_LOG=$TB_STATE/mxbridge.log
	TB_MXB_PIDFILE=$TB_STATE/pids/box.mxbridge.pid
}

# tb_up / tb_down: the testbed script for the current TB_NAME
tb_up() { bash "$TB_SCRIPT" up "$TB_NAME"; }
tb_down() { bash "$TB_SCRIPT" down "$TB_NAME"; }

tb__cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "${TB_NAME:-}" ] && [ -z "${TB_KEEP:-}" ]; then
		mxb_stop >/dev/null 2>&1
		TBD_QUIET=1 bash "$TB_SCRIPT" down "$TB_NAME" >/dev/null 2>&1
	elif [ -n "${TB_KEEP:-}" ]; then
		echo "# TB_KEEP set: testbed $TB_NAME left up (test/testbed.sh down $TB_NAME)" >&2
	fi
	exit "$rc"
}

# tb_init [NAME]: unique testbed for this test, up now, down on exit.
# Skips (77) when not root or a required tool is missing.
tb_init() {
	[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
	need ip python3 postfix smtp-sink dnsmasq ss
	[ -z "${MXB_TB_DIR:-}" ] || note "ignoring MXB_TB_DIR for a per-test testbed"
	unset MXB_TB_DIR
	tb_use "${1:-mxbt$$}"
	trap tb__cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	local out
	out=$(TBD_QUIET=1 bash "$TB_SCRIPT" up "$TB_NAME" 2>&1) ||
		fail "testbed up failed: $(printf '%s\n' "$out" | grep -m1 error || echo "$out" | tail -n 1)"
}

# tb_ns NODE: the namespace name;  tb_exec NODE CMD...: run CMD in it
tb_ns() { echo "$TB_NAME-$1"; }
tb_exec() { local n=$1; shift; ip netns exec "$TB_NAME-$n" "$@"; }

# tb_postfix ARGS...: the srv Postfix, e.g. tb_postfix reload / flush
# (edit with: tb_exec srv postconf -c "$TB_POSTFIX_CONF" -e key=value)
tb_postfix() { tb_exec srv postfix -c "$TB_POSTFIX_CONF" "$@"; }

# ---------------------------------------------------------------- polling
# wait_for [-t SECONDS] CMD...: poll CMD every 0.1 s until it succeeds
# (default timeout 10 s, or $TB_WAIT).  Returns 1 on timeout.
wait_for() {
	local t=${TB_WAIT:-10}
	if [ "${1:-}" = -t ]; then t=$2; shift 2; fi
	local end=$((SECONDS + t))
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

# maildir_count USER [OP N]: messages in USER's Maildir (new + cur).
# With OP N (e.g. -ge 1) it is a test instead: handy with wait_for.
maildir_count() {
	local u=${1%%@*} n
	n=$(find "$TB_MAILDIR/$u/new" "$TB_MAILDIR/$u/cur" -type f 2>/dev/null | wc -l)
	if [ $# -ge 3 ]; then test "$n" "$2" "$3"; else echo "$n"; fi
}

# sink_count DIR [OP N]: messages dumped by an smtp-sink into DIR
# (TB_EXT_DIR, TB_MX_DIR, TB_RELAY_DIR).  Same OP N form as maildir_count.
sink_count() {
	local n
	n=$(find "$1" -type f 2>/dev/null | wc -l)
	if [ $# -ge 3 ]; then test "$n" "$2" "$3"; else echo "$n"; fi
}

# maillog_has REGEX: the srv Postfix log matches (grep -E)
maillog_has() { grep -Eq -- "$1" "$TB_MAILLOG"; }

# ---------------------------------------------------------------- DNS
# tb_dig NODE TYPE NAME [SERVER]: a DNS query from NODE's namespace, no
# tools needed (python3).  Prints the answers one per line like
# "dig +short" (MX: "10 mx.example.net."); exit 0 NOERROR (empty output:
# NODATA), 2 NXDOMAIN, 1 other rcode or no answer.  SERVER defaults to the
# first nameserver of NODE's resolv.conf (box: the testbed DNS).
TB_DIG_PY='
import random, socket, struct, sys
qtype, name = sys.argv[1].upper(), sys.argv[2]
server = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
if not server:
    for line in open("/etc/resolv.conf"):
        f = line.split()
        if len(f) >= 2 and f[0] == "nameserver":
            server = f[1]; break
types = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
qid = random.randint(0, 65535)
q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
for label in name.rstrip(".").split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack("!HH", types[qtype], 1)
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(1.0)
for attempt in range(3):
    s.sendto(q, (server, 53))
    try:
        r, _ = s.recvfrom(4096)
    except socket.timeout:
        continue
    if r[:2] == q[:2]:
        break
else:
    print("no answer from %s" % server, file=sys.stderr); sys.exit(1)
def rname(p):
    out = []; jumped = False; end = p
    while True:
        n = r[p]
        if n == 0:
            p += 1; break
        if n & 0xC0 == 0xC0:
            if not jumped: end = p + 2
            p = ((n & 0x3F) << 8) | r[p + 1]; jumped = True; continue
        out.append(r[p + 1:p + 1 + n].decode()); p += 1 + n
    return ".".join(out) + ".", (end if jumped else p)
_, flags, qd, an, _, _ = struct.unpack("!HHHHHH", r[:12])
rcode = flags & 15
p = 12
for _ in range(qd):
    _, p = rname(p); p += 4
for _ in range(an):
    _, p = rname(p)
    t, _, _, ln = struct.unpack("!HHIH", r[p:p + 10]); p += 10
    d = r[p:p + ln]
    if t == 1: print(socket.inet_ntop(socket.AF_INET, d))
    elif t == 28: print(socket.inet_ntop(socket.AF_INET6, d))
    elif t == 15: print("%d %s" % (struct.unpack("!H", d[:2])[0], rname(p + 2)[0]))
    elif t in (2, 5, 12): print(rname(p)[0])
    elif t == 16: print(repr(d[1:].decode(errors="replace")))
    else: print("type%d len %d" % (t, ln))
    p += ln
if rcode == 3:
    print("NXDOMAIN", file=sys.stderr); sys.exit(2)
if rcode != 0:
    print("rcode %d" % rcode, file=sys.stderr); sys.exit(1)
'
tb_dig() {
	local node=$1 type=$2 name=$3 server=${4:-}
	tb_exec "$node" python3 -c "$TB_DIG_PY" "$type" "$name" "$server"
}

# ---------------------------------------------------------------- SMTP
# tb_swaks NODE ARGS...: swaks from NODE, quiet unless it fails
# (output in $TB_STATE/swaks.out).  For IPv6, swaks needs IO::Socket::INET6
# (Debian: libio-socket-inet6-perl); tb_have_swaks6 tells.
tb_swaks() {
	local node=$1; shift
	tb_exec "$node" swaks --helo "$node.test.example" --timeout 10 "$@" \
		>"$TB_STATE/swaks.out" 2>&1
}
tb_have_swaks6() { perl -MIO::Socket::INET6 -e 1 >/dev/null 2>&1; }

# tb_smtp_send NODE SERVER FROM TO [SUBJECT]: one message with python3
# smtplib (IPv4 or IPv6 literal SERVER, port 25).  No swaks needed.
tb_smtp_send() {
	local node=$1 server=$2 from=$3 to=$4 subj=${5:-testbed message}
	tb_exec "$node" python3 -c '
import smtplib, sys
srv, frm, to, subj, helo = sys.argv[1:6]
msg = "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nhello from the testbed\r\n" % (frm, to, subj)
with smtplib.SMTP(srv, 25, local_hostname=helo, timeout=10) as s:
    s.sendmail(frm, [to], msg)
' "$server" "$from" "$to" "$subj" "$node.test.example" >"$TB_STATE/smtp.out" 2>&1
}

# ---------------------------------------------------------------- daemon
# mxb_start CONF [ARGS...]: start $MXB_BIN/mxbridge -d -f CONF in the box
# namespace, stderr+stdout to $TB_MXB_LOG, pid in $TB_MXB_PIDFILE (so
# testbed.sh down also stops it).  Returns 1 if it died within 0.3 s.
# MXB_BIN defaults to ./build of the repository.
mxb_start() {
	local conf=$1 bin; shift
	bin=${MXB_BIN:-$TB_REPO/build}
	case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
	case $conf in /*) ;; *) conf=$PWD/$conf ;; esac
	[ -x "$bin/mxbridge" ] || { echo "mxb_start: no $bin/mxbridge" >&2; return 1; }
	mxb_running && { echo "mxb_start: already running" >&2; return 1; }
	ip netns exec "$TB_NAME-box" "$bin/mxbridge" -d -f "$conf" "$@" \
		</dev/null >>"$TB_MXB_LOG" 2>&1 &
	MXB_PID=$!
	echo "$MXB_PID" >"$TB_MXB_PIDFILE"
	sleep 0.3
	mxb_running || { echo "mxb_start: mxbridge exited: $(tail -n 3 "$TB_MXB_LOG")" >&2; return 1; }
}

mxb_running() {
	local pid
	pid=$(tr -dc 0-9 2>/dev/null <"$TB_MXB_PIDFILE") || return 1
	tbd_pid_in_ns "$pid" box || return 1
	# a zombie is not running
	! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# mxb_stop [TIMEOUT]: SIGTERM, wait (default 5 s), then SIGKILL.
# Returns 0 if it stopped on SIGTERM, 1 if it had to be killed.
mxb_stop() {
	local pid t=${1:-5} rc=0
	[ -n "${TB_MXB_PIDFILE:-}" ] || return 0
	pid=$(tr -dc 0-9 2>/dev/null <"$TB_MXB_PIDFILE")
	if [ -n "$pid" ] && tbd_pid_in_ns "$pid" box; then
		kill -TERM "$pid" 2>/dev/null
		if ! wait_for -t "$t" eval '! mxb_running'; then
			kill -KILL "$pid" 2>/dev/null
			rc=1
		fi
		wait "$pid" 2>/dev/null
	fi
	rm -f "$TB_MXB_PIDFILE"
	return $rc
}
