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

# TB_ATEXIT: commands a test adds to the cleanup (eval'ed first).  Set it
# instead of a trap of its own: a trap that runs a command before
# tb__cleanup hands it that command's status, not the test's, and a failed
# test could then exit 0.
tb__cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -z "${TB_ATEXIT:-}" ] || eval "$TB_ATEXIT"
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

# mail_file DIR SUBJECT: the first message file below DIR (a Maildir, an
# smtp-sink dump dir ...) with the header line "Subject: SUBJECT" (taken
# literally, LF or CRLF); nothing and status 1 if there is none.
# mail_has DIR SUBJECT: there is one (handy with wait_for).
mail_file() {
	local f
	f=$(grep -rlxF -e "Subject: $2" -e "Subject: $2"$'\r' -- "$1" 2>/dev/null | head -n 1)
	[ -n "$f" ] && echo "$f"
}
mail_has() { grep -rqsxF -e "Subject: $2" -e "Subject: $2"$'\r' -- "$1"; }

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

# tb_chat NODE HOST PORT STEP...: one SMTP session from NODE (python3), one
# output line per step ("CODE text", multi-line replies joined by " | "),
# the banner first.  Steps: any command line; STARTTLS (then TLS,
# certificate not checked); AUTH USER PASS (AUTH PLAIN); DATA[=SUBJECT]
# (the message follows a 354, the line is the final reply); WAIT=FILE
# (wait up to 30 s for FILE to exist, prints WAITED).  A failure prints
# REFUSED, RESET, TIMEOUT, EOF or "ERROR why", stops, and returns 1.
TB_CHAT_PY='
import base64, socket, ssl, sys, os, time
host, port, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def out(s):
    print(s, flush=True)
def reply(f):
    lines = []
    while True:
        l = f.readline()
        if not l:
            raise EOFError
        l = l.decode(errors="replace").rstrip("\r\n")
        lines.append(l)
        if len(l) < 4 or l[3] != "-":
            break
    return lines[-1][:3] + " " + " | ".join(x[4:] for x in lines)
try:
    s = socket.create_connection((host, port), timeout=15)
    f = s.makefile("rb")
    out(reply(f))
    for st in steps:
        if st.startswith("WAIT="):
            end = time.time() + 30
            while not os.path.exists(st[5:]) and time.time() < end:
                time.sleep(0.05)
            out("WAITED")
            continue
        if st.startswith("AUTH "):
            _, u, p = st.split(" ", 2)
            tok = base64.b64encode(("\0%s\0%s" % (u, p)).encode()).decode()
            st = "AUTH PLAIN " + tok
        if st.startswith("DATA"):
            subj = st[5:] or "t-policy"
            s.sendall(b"DATA\r\n")
            r = reply(f)
            if r.startswith("354"):
                msg = ("Subject: %s\r\nMessage-ID: <%s.%d@c.test.example>\r\n"
                       "\r\nhello from the policy tests\r\n.\r\n" %
                       (subj, subj.replace(" ", "-"), os.getpid()))
                s.sendall(msg.encode())
                r = reply(f)
            out(r)
            continue
        s.sendall(st.encode() + b"\r\n")
        r = reply(f)
        out(r)
        if st.upper() == "STARTTLS" and r.startswith("220"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=host)
            f = s.makefile("rb")
except ConnectionRefusedError:
    out("REFUSED"); sys.exit(1)
except ConnectionResetError:
    out("RESET"); sys.exit(1)
except (socket.timeout, TimeoutError):
    out("TIMEOUT"); sys.exit(1)
except EOFError:
    out("EOF"); sys.exit(1)
except (OSError, ssl.SSLError) as e:
    out("ERROR %s" % e); sys.exit(1)
'
tb_chat() { local n=$1; shift; tb_exec "$n" python3 -c "$TB_CHAT_PY" "$@"; }

# tb_make_cert DIR: a throw-away self-signed certificate for gw.example.com,
# DIR/cert.pem and DIR/key.pem (openssl's output in DIR/openssl.log).
# Fails the test if openssl does.
tb_make_cert() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=gw.example.com" \
		-keyout "$1/key.pem" -out "$1/cert.pem" >"$1/openssl.log" 2>&1 ||
		fail "openssl could not make a certificate: $(tail -n 1 "$1/openssl.log")"
	# read at start as root, at reload as the daemon's user: the key is
	# its group's, as mxbridge.conf(5) asks
	chgrp "$MXB_USER" "$1/key.pem" && chmod 0640 "$1/key.pem" ||
		fail "cannot give $1/key.pem to group $MXB_USER"
}

# tb_cert DIR CN [SIGNER [SAN [DAYS]]]: a P-256 key and certificate in
# DIR/key.pem and DIR/cert.pem for CN, its subjectAltName SAN (default
# DNS:CN), signed by the tb_cert in the folder SIGNER, or without one a
# self-signed CA; valid DAYS days (default 2; -1: expired yesterday)
tb_cert() {
	local d=$1 cn=$2 signer=${3:-} san=${4:-DNS:$2} days=${5:-2}
	mkdir -p "$d"
	if [ -z "$signer" ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-days "$days" -subj "/CN=$cn" -addext "subjectAltName=$san" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-keyout "$d/key.pem" -out "$d/cert.pem"
	else
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=$cn" -keyout "$d/key.pem" -out "$d/req.pem" &&
		printf 'subjectAltName=%s\n' "$san" >"$d/ext.cnf" &&
		openssl x509 -req -in "$d/req.pem" -CA "$signer/cert.pem" \
			-CAkey "$signer/key.pem" -CAcreateserial -days "$days" \
			-extfile "$d/ext.cnf" -out "$d/cert.pem"
	fi >"$d/openssl.log" 2>&1 ||
		fail "openssl $d: $(tail -n 2 "$d/openssl.log")"
}

# tb_cert_chain DIR N CN GENPKEY-ARGS...: a chain of N certificates in
# DIR/cert.pem, the leaf for CN first, then the CAs up to the root
# (DIR/root.pem, the one to trust), every one by the one key DIR/key.pem
# (made by openssl genpkey GENPKEY-ARGS): a hostile peer's long chain
tb_cert_chain() {
	local d=$1 n=$2 cn=$3 i subj ext; shift 3
	mkdir -p "$d"
	openssl genpkey "$@" -out "$d/key.pem" 2>"$d/openssl.log" ||
		fail "openssl genpkey: $(tail -n 2 "$d/openssl.log")"
	printf 'basicConstraints=critical,CA:TRUE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$d/ca.cnf"
	printf 'subjectAltName=DNS:%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$cn" >"$d/leaf.cnf"
	openssl req -x509 -key "$d/key.pem" -days 2 -subj "/CN=hostile root" \
		-addext "basicConstraints=critical,CA:TRUE" -out "$d/c0.pem" >>"$d/openssl.log" 2>&1 ||
		fail "openssl root: $(tail -n 2 "$d/openssl.log")"
	for ((i = 1; i < n; i++)); do
		if [ "$i" -lt $((n - 1)) ]; then subj="/CN=hostile CA $i" ext=ca.cnf
		else subj="/CN=$cn" ext=leaf.cnf; fi
		openssl req -new -key "$d/key.pem" -subj "$subj" -out "$d/r.pem" &&
		openssl x509 -req -in "$d/r.pem" -CA "$d/c$((i - 1)).pem" -CAkey "$d/key.pem" \
			-set_serial "$i" -days 2 -extfile "$d/$ext" -out "$d/c$i.pem" ||
			fail "openssl $d certificate $i: $(tail -n 2 "$d/openssl.log")"
	done >>"$d/openssl.log" 2>&1
	cp "$d/c0.pem" "$d/root.pem"
	for ((i = n - 1; i >= 0; i--)); do cat "$d/c$i.pem"; done >"$d/cert.pem"
	rm -f "$d"/c[0-9]*.pem "$d/r.pem"
}

# ---------------------------------------------------------------- daemon
# The daemon drops to its user once started (mxbridge.conf(5) "user",
# default _mxbridge; scripts/install-deps.sh makes it): it then writes
# its spool, removes its pid file and control socket, and re-reads its
# configuration and certificates at reload, as that user.
MXB_USER=${MXB_USER:-_mxbridge}

# mxb_statedir DIR: DIR (0755) and DIR/spool (0700) for a daemon, both
# its user's.  Fails the test if they cannot be made.
mxb_statedir() {
	getent passwd "$MXB_USER" >/dev/null ||
		fail "no user $MXB_USER (scripts/install-deps.sh adds it)"
	mkdir -p "$1/spool" && chmod 0755 "$1" && chmod 0700 "$1/spool" &&
		chown "$MXB_USER:" "$1" "$1/spool" ||
		fail "cannot make $1/spool for $MXB_USER"
}

# mxb_start CONF [ARGS...]: start $MXB_BIN/mxbridge -d -f CONF in the box
# namespace, stderr+stdout to $TB_MXB_LOG, pid in $TB_MXB_PIDFILE (so
# testbed.sh down also stops it).  Returns 1 if it died within 0.3 s.
# MXB_BIN defaults to ./build of the repository; MXB_WRAP, a command line
# to start it with (setpriv, as systemd would start it).
mxb_start() {
	local conf=$1 bin; shift
	bin=${MXB_BIN:-$TB_REPO/build}
	case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
	case $conf in /*) ;; *) conf=$PWD/$conf ;; esac
	[ -x "$bin/mxbridge" ] || { echo "mxb_start: no $bin/mxbridge" >&2; return 1; }
	mxb_running && { echo "mxb_start: already running" >&2; return 1; }
	# shellcheck disable=SC2086 # MXB_WRAP: a command line to start it with
	ip netns exec "$TB_NAME-box" ${MXB_WRAP:-} "$bin/mxbridge" -d -f "$conf" "$@" \
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

# ---------------------------------------------------------------- probes
# tb_banner NODE HOST [PORT [TIMEOUT]]: connect from NODE to HOST (an IPv4
# or IPv6 literal), PORT 25 by default, and print what came back: "BANNER
# <first line>", REFUSED, RESET, TIMEOUT (nothing within TIMEOUT s,
# default 5), EOF or "ERROR <why>".  Exit 0 whatever the answer: compare
# it with expect_glob.
TB_BANNER_PY='
import socket, sys
host, port, tmo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(tmo)
try:
    s.connect((host, port))
    data = b""
    while b"\n" not in data:
        d = s.recv(512)
        if not d:
            break
        data += d
    print("BANNER " + data.decode(errors="replace").splitlines()[0] if data else "EOF")
except ConnectionRefusedError:
    print("REFUSED")
except ConnectionResetError:
    print("RESET")
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print("ERROR %s" % e)
'
tb_banner() { tb_exec "$1" python3 -c "$TB_BANNER_PY" "$2" "${3:-25}" "${4:-5}"; }

# expect_glob WHAT GOT PATTERN...: fail the test ("WHAT: got 'GOT', want
# 'P1|P2'") unless GOT matches one of the shell PATTERNs, e.g.
#   expect_glob "c1 to srv" "$(tb_banner c1 "$TB_SRV_IP4")" "BANNER 220 *"
expect_glob() {
	local what=$1 got=$2 p want; shift 2
	for p in "$@"; do
		# shellcheck disable=SC2254
		case $got in $p) return 0 ;; esac
	done
	want=$(IFS='|'; echo "$*")
	fail "$what: got '$got', want '$want'"
}

# tb_hello_start NODE PORT [4|6]: a TCP server in NODE on PORT (IPv4, or
# IPv6 with 6) that greets each client with "hello <client address>" and
# closes; pid in TB_HELLO_PID.  Returns 1 if it is not listening within
# the wait_for timeout.  tb_hello_stop ends it (the testbed's down would).
# TB_BULK_SINK_PY: a TCP server on [::]:2525 (IPv4 too) that reads until
# the client shuts down and answers "got N" (the bytes it read)
TB_BULK_SINK_PY='
import socket, threading
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 2525)); s.listen(16)
def serve(c):
    n = 0
    try:
        while True:
            b = c.recv(65536)
            if not b: break
            n += len(b)
        c.sendall(b"got %d\n" % n)
    except OSError:
        pass
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'
# TB_BULK_CLIENT_PY FAMILY DST PORT SPORT BYTES RST: connect from SPORT (0: any);
# BYTES 0: print the banner, else send half of BYTES; print "MID"; wait
# for a line on stdin; RST 1: close with a reset, else send the rest,
# shut down and print the server's reply ("got N")
TB_BULK_CLIENT_PY='
import socket, struct, sys
fam, dst, port, sport, n, rst = sys.argv[1:7]
port, sport, n = int(port), int(sport), int(n)
c = socket.socket(socket.AF_INET6 if fam == "6" else socket.AF_INET)
c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sport: c.bind(("", sport))
c.settimeout(30)
c.connect((dst, port))
if n == 0:
    print("BANNER " + c.recv(512).decode(errors="replace").strip(), flush=True)
else:
    c.sendall(b"x" * (n // 2))
print("MID", flush=True)
sys.stdin.readline()
if rst == "1":
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close(); print("RST", flush=True); sys.exit(0)
c.sendall(b"x" * (n - n // 2))
c.shutdown(socket.SHUT_WR)
print(c.recv(512).decode().strip(), flush=True)
'

TB_HELLO_PY='
import socket, sys
v6 = sys.argv[2] == "6"
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", int(sys.argv[1]))); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(("hello %s\r\n" % a[0]).encode()); c.close()
'
tb_hello_start() {
	local node=$1 port=$2
	# not through tb_exec: $! has to be the server itself
	ip netns exec "$(tb_ns "$node")" python3 -c "$TB_HELLO_PY" "$port" "${3:-4}" \
		</dev/null >/dev/null 2>&1 &
	TB_HELLO_PID=$!
	wait_for tbd_listening_tcp "$node" ":$port" "$port"
}
tb_hello_stop() {
	[ -n "${TB_HELLO_PID:-}" ] || return 0
	kill "$TB_HELLO_PID" 2>/dev/null
	wait "$TB_HELLO_PID" 2>/dev/null
	TB_HELLO_PID=
}

# maillog_connects IP: how many connections from IP the srv Postfix logged
maillog_connects() { grep -c "connect from unknown\[$1\]" "$TB_MAILLOG"; }

# expect_postfix_direct NODE CLIENT SERVER RCPT SUBJECT: the pass path.
# One message from NODE to RCPT (user@example.com) at SERVER port 25
# (tb_smtp_send, sender@example.org); fail the test unless it is accepted,
# lands in the user's Maildir (by SUBJECT, within the wait_for timeout)
# and the srv Postfix logged CLIENT (an address) as the client.
expect_postfix_direct() {
	local node=$1 client=$2 server=$3 rcpt=$4 subj=$5
	tb_smtp_send "$node" "$server" sender@example.org "$rcpt" "$subj" ||
		fail "$subj: SMTP $node -> $server: $(tail -n 1 "$TB_STATE/smtp.out")"
	wait_for mail_has "$TB_MAILDIR/${rcpt%%@*}" "$subj" ||
		fail "$subj: not delivered into ${rcpt%%@*}'s Maildir"
	maillog_has "client=unknown\[$client\]" || fail "$subj: Postfix did not see client $client"
}

# ---------------------------------------------------------------- interception
# The daemon behind the real rules (scripts/mxbridge-netfilter) with its
# queue and listeners: 10025 incoming, 10026 outgoing, p0 the client side.

# mxb_setup [DIR [QUEUE]]: after tb_init, set MXB_DIR (default
# $TB_STATE/intercept: spool/, pidfile, ctl.sock, nf.log), MXB_QUEUE (the
# queue number, default 5), MXB_WORKERS (the daemon's "workers" and the
# script's -W, default auto, as both default to; MXB_WORKERS=1 runs the
# suite with one worker), MXB_BINDIR (absolute $MXB_BIN, default
# <repo>/build) and MXB_NF (the netfilter script); make $MXB_DIR/spool.
mxb_setup() {
	MXB_DIR=${1:-$TB_STATE/intercept}
	MXB_QUEUE=${2:-5}
	MXB_WORKERS=${MXB_WORKERS:-auto}
	MXB_BINDIR=${MXB_BIN:-$TB_REPO/build}
	case $MXB_BINDIR in /*) ;; *) MXB_BINDIR=$PWD/$MXB_BINDIR ;; esac
	MXB_NF=$TB_REPO/scripts/mxbridge-netfilter
	mxb_statedir "$MXB_DIR"
}

# mxb_conf_head: print the lines every test config starts with: hostname
# gw.example.com, spool, pidfile and control in $MXB_DIR, queue-number
# $MXB_QUEUE, workers $MXB_WORKERS, classifier $MXB_CLASSIFIER (default
# kernel: a test that reads the queue's per-flow lines or per-worker
# decisions sets MXB_CLASSIFIER=queue), listeners 10025 (incoming) and
# 10026 (outgoing).  A test appends its own policy:  mxb_conf_head >"$f"; cat >>"$f" <<EOF ...
mxb_conf_head() {
	cat <<EOF
hostname "gw.example.com"
spool "$MXB_DIR/spool"
pidfile "$MXB_DIR/mxbridge.pid"
control "$MXB_DIR/ctl.sock"
queue-number $MXB_QUEUE
workers ${MXB_WORKERS:-auto}
classifier ${MXB_CLASSIFIER:-kernel}
listen incoming port 10025
listen outgoing port 10026
EOF
}

# mxb_conf_write FILE P0-INCOMING P0-OUTGOING [SERVER]: the interception
# config: hostname gw.example.com, state in $MXB_DIR, queue $MXB_QUEUE,
# listeners 10025/10026, proxy both ways by default, port p0 with the
# given actions (proxy, pass or drop), domain example.com with its server
# SERVER port 25 (default $TB_SRV_IP4; mx.example.com names both of srv's
# addresses), client $TB_C2_IP4 bypassed.
mxb_conf_write() {
	mxb_conf_head >"$1"
	cat >>"$1" <<EOF
default incoming proxy
default outgoing proxy
port "p0" {
	incoming $2
	outgoing $3
}
domain "example.com" {
	server ${4:-$TB_SRV_IP4} port 25
}
bypass client $TB_C2_IP4
EOF
}

# mxb_ctl ARGS...: mxbridgectl in the box, on $MXB_DIR/ctl.sock
mxb_ctl() { tb_exec box "$MXB_BINDIR/mxbridgectl" -s "$MXB_DIR/ctl.sock" "$@"; }

# mxb_reload [WHAT]: "mxbridgectl reload"; fail the test ("WHAT refused:
# <its output>", WHAT by default "reload") if the daemon refuses it
mxb_reload() {
	local out
	out=$(mxb_ctl reload 2>&1) || fail "${1:-reload} refused: $out"
}

# mxb_nf_up [open|closed]: mxbridge-netfilter up in the box (bridge br0,
# queue $MXB_QUEUE, -W $MXB_WORKERS, listeners 10025/10026) with that fail mode (default
# open), output in $MXB_DIR/nf.log.  Fails the test if the script fails.
mxb_nf_up() {
	local mode=${1:-open}
	tb_exec box bash "$MXB_NF" up -b br0 -q "$MXB_QUEUE" -W "${MXB_WORKERS:-auto}" -i 10025 -o 10026 \
		-F "$mode" >"$MXB_DIR/nf.log" 2>&1 ||
		fail "mxbridge-netfilter up -F $mode: $(tail -n 3 "$MXB_DIR/nf.log")"
}

# mxb_start_queue CONF [ARGS...]: mxb_start CONF -v ARGS (-v: the nfq
# decisions are logged), then wait until this daemon has opened queue
# $MXB_QUEUE (one more "nfq: queue=N open" line in $TB_MXB_LOG than
# before).  Fails the test if it does not start or the queue stays shut.
mxb_start_queue() {
	local conf=$1 n; shift
	n=$(grep -c "nfq: queue=$MXB_QUEUE open" "$TB_MXB_LOG" 2>/dev/null)
	mxb_start "$conf" -v "$@" || fail "daemon did not start"
	wait_for eval '[ "$(grep -c "nfq: queue=$MXB_QUEUE open" "$TB_MXB_LOG")" -gt "${n:-0}" ]' ||
		fail "queue $MXB_QUEUE not open: $(tail -n 5 "$TB_MXB_LOG")"
}

# mxb_premark add|del CLASS: the benches' "premarked" path: c1's SMTP
# flows get mark class CLASS (0x30000 pass, 0x20000 outgoing proxy) in a
# table of their own (ip mxbridge_premark) whose prerouting chain runs
# before the daemon's kernel classifier (-151) and the script's chain
# (-150), either back end, so that neither classifies them
mxb_premark() {
	if [ "$1" = add ]; then
		tb_exec box nft -f - <<EOF
table ip mxbridge_premark {
	chain pre {
		type filter hook prerouting priority -160; policy accept;
		ip saddr $TB_C1_IP4 tcp dport 25 meta mark set meta mark and 0xfff0ffff or $2
	}
}
EOF
	else
		tb_exec box nft delete table ip mxbridge_premark
	fi
}

# mxb_kernel_table: true while the daemon's kernel classifier table
# (inet mxbridge_classify, "classifier kernel") is in the box
mxb_kernel_table() { tb_exec box nft list table inet mxbridge_classify >/dev/null 2>&1; }

# mxb_decisions: the sum of the daemon's nfq decision counters
mxb_decisions() {
	mxb_ctl stats | awk -F= '/^nfq_(incoming|outgoing)_/ { n += $2 } END { print n + 0 }'
}

# mxb_stats_expect KEY OP N [KEY OP N]...: fail the test unless, in one
# "mxbridgectl stats", every KEY is there and "test VALUE OP N" holds:
#   mxb_stats_expect nfq_incoming_proxy -ge 1 nfq_errors -eq 0
mxb_stats_expect() {
	local st v
	[ $# -gt 0 ] && [ $(($# % 3)) = 0 ] || fail "usage: mxb_stats_expect KEY OP N..."
	st=$(mxb_ctl stats) || fail "mxbridgectl stats failed"
	while [ $# -ge 3 ]; do
		v=$(printf '%s\n' "$st" | sed -n "s/^$1=//p")
		[ -n "$v" ] && test "$v" "$2" "$3" 2>/dev/null ||
			fail "stats: $1=$v, want $2 $3: ${st//$'\n'/ }"
		shift 3
	done
}

# mxb_stat KEY: the value of KEY in one "mxbridgectl stats" (nothing and
# status 1 if the line is not there), e.g. mxb_stat proxy_sessions
mxb_stat() {
	local v
	v=$(mxb_ctl stats 2>/dev/null | sed -n "s/^$1=//p")
	[ -n "$v" ] && echo "$v"
}

# mxb_wstats KEY: worker I's worker.I.KEY, one line "I VALUE" per worker
# 0..$MXB_WORKERS-1, all from one "mxbridgectl stats" ("I -" for a worker
# whose line is missing).  The sum of the values: mxb_wsum KEY.
mxb_wstats() {
	mxb_ctl stats 2>/dev/null | awk -F= -v k="$1" -v n="${MXB_WORKERS:-1}" '
		{ v[$1] = $2 }
		END { for (i = 0; i < n; i++) { w = "worker." i "." k
			print i, ((w in v) ? v[w] : "-") } }'
}
mxb_wsum() { mxb_wstats "$1" | awk '$2 != "-" { n += $2 } END { print n + 0 }'; }

# mxb_each_worker KEY OP N: every worker 0..$MXB_WORKERS-1 has its line
# worker.I.KEY and "test VALUE OP N" holds for each (handy with wait_for)
mxb_each_worker() {
	local i v rc=0
	while read -r i v; do
		[ "$v" != - ] && test "$v" "$2" "$3" 2>/dev/null || rc=1
	done < <(mxb_wstats "$1")
	return $rc
}

# mxb_wshow KEY: "worker.0.KEY=A worker.1.KEY=B ..." for a failure message
mxb_wshow() { mxb_wstats "$1" | awk -v k="$1" '{ printf "%sworker.%s.%s=%s", (NR > 1 ? " " : ""), $1, k, $2 }'; }

# mxb_queues_open [FROM]: every worker queue $MXB_QUEUE ..
# $MXB_QUEUE+$MXB_WORKERS-1 has its "nfq: queue=Q open" line in the
# daemon's log (from line FROM on, default 1: a restart passes the line
# count it had before)
mxb_queues_open() {
	local q from=${1:-1}
	for ((q = MXB_QUEUE; q < MXB_QUEUE + ${MXB_WORKERS:-1}; q++)); do
		tail -n "+$from" "$TB_MXB_LOG" 2>/dev/null | grep -q "nfq: queue=$q open" || return 1
	done
}

# mxb_sancheck: fail the test if the daemon's log holds a sanitizer report
mxb_sancheck() {
	grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" 2>/dev/null || return 0
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
}

# mxb_kill: SIGKILL the daemon and wait until it is gone (pidfile
# removed).  Fails the test if there is no daemon pid or it survives.
mxb_kill() {
	local pid
	pid=$(tr -dc 0-9 2>/dev/null <"$TB_MXB_PIDFILE")
	[ -n "$pid" ] || fail "no daemon pid"
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	wait_for eval '! mxb_running' || fail "daemon survived SIGKILL"
	rm -f "$TB_MXB_PIDFILE"
}

# mxb_down [TIMEOUT]: mxb_stop [TIMEOUT], then mxb_sancheck; fails the
# test if the daemon needed SIGKILL or left a sanitizer report
mxb_down() {
	mxb_stop "$@" || fail "daemon needed SIGKILL"
	mxb_sancheck
}

# fakemilter_up PORT: test/fakemilter.py in the box on 127.0.0.1:PORT in
# mode "accept" ($S must be set); ML is its log (one JSON object per
# line), MF its mode file, FM its pid, stopped at the end (TB_ATEXIT).
# mode WORDS: the mode of its next connection, the log emptied;
# mlog_has TEXT: its log has TEXT.
fakemilter_up() {
	ML=$S/milter.log MF=$S/milter.mode
	: >"$ML"
	echo accept >"$MF"
	chmod 644 "$MF"
	ip netns exec "$(tb_ns box)" python3 "$TB_REPO/test/fakemilter.py" "$ML" 127.0.0.1 "$1" "$MF" \
		</dev/null >"$S/milter.err" 2>&1 &
	FM=$!
	TB_ATEXIT="${TB_ATEXIT:+$TB_ATEXIT;}kill $FM 2>/dev/null"
	wait_for grep -q LISTENING "$ML" || fail "fake milter did not start: $(cat "$S/milter.err")"
}
mode() { echo "$*" >"$MF"; : >"$ML"; }
mlog_has() { grep -q -- "$1" "$ML"; }
