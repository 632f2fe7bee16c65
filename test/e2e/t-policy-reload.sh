#!/bin/bash
# shellcheck disable=SC2016,SC2034,SC2254
# (eval'd wait_for conditions, glob patterns in expect on purpose)
# t-policy-reload: reloading the configuration under traffic.
#   - a session open across a reload completes under the snapshot it
#     started with: c1 opens an SMTP session through the incoming proxy,
#     says EHLO and MAIL; the config is changed (p0 incoming -> pass, and a
#     rule refusing alice) and `mxbridgectl reload`ed; the session then
#     finishes RCPT <alice> and DATA: accepted, queued and delivered into
#     alice's Maildir by the box, as the old snapshot decided;
#   - new sessions see the new config: the next connection gets Postfix's
#     own banner (pass) and Postfix logs the real client; after a SIGHUP
#     back to proxy with a rule refusing bob, a new session gets the
#     gateway's banner and bob is refused with the rule's text;
#   - a broken config is refused: `mxbridgectl reload` exits 1 naming
#     FILE:LINE, the log says so (also for SIGHUP), and the old config
#     keeps serving (gateway banner, bob still refused, alice delivered).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
NF=$TB_REPO/scripts/mxbridge-netfilter
S=$TB_STATE/reload
Q=3
mkdir -p "$S/spool"

# chat NODE HOST PORT STEP...: one SMTP session, one output line per step
# ("CODE text", multi-line replies joined by " | "), the banner first.
# Steps: any command line; STARTTLS (then TLS, certificate not checked);
# AUTH USER PASS (AUTH PLAIN); DATA[=SUBJECT] (the message follows a 354,
# the line is the final reply); WAIT=FILE (wait for FILE to exist).
# A failure prints REFUSED, RESET, TIMEOUT, EOF or "ERROR why" and stops.
CHAT_PY='
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
chat() { local n=$1; shift; tb_exec "$n" python3 -c "$CHAT_PY" "$@"; }

# probe NODE HOST [PORT [TIMEOUT]]: "BANNER <first line>", REFUSED, RESET,
# TIMEOUT, EOF or "ERROR <why>"  (as in t-intercept-*.sh)
PROBE_PY='
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
probe() { tb_exec "$1" python3 -c "$PROBE_PY" "$2" "${3:-25}" "${4:-5}"; }

ctl() { tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" "$@"; }
connects() { grep -c "connect from unknown\[$1\]" "$TB_MAILLOG"; }
expect() {	# WHAT GOT PATTERN
	case $2 in $3) ;; *) fail "$1: got '$2', want '$3'" ;; esac
}
# sessions: incoming sessions of c1 the daemon has logged
sessions() { grep -Ec "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_SRV_IP4:25 dir=incoming" "$TB_MXB_LOG"; }
reloads() { grep -c "reload: configuration=" "$TB_MXB_LOG"; }
refusals() { grep -c "reload refused" "$TB_MXB_LOG"; }

# conf FILE P0-INCOMING [RULE]: RULE comes before the rule letting the
# local network relay, so it decides for the recipients it names
conf() {
	cat >"$1" <<EOF
hostname "gw.example.com"
spool "$S/spool"
pidfile "$S/mxbridge.pid"
control "$S/ctl.sock"
queue-number $Q
listen incoming port 10025
listen outgoing port 10026
default incoming proxy
default outgoing proxy
port "p0" {
	incoming $2
}
domain "example.com" {
	server $TB_SRV_IP4
}
${3:-# no extra rule}
match client $TB_PREFIX4 relay
EOF
}

conf "$S/run.conf" proxy
tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F open \
	>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
mxb_start "$S/run.conf" -v || fail "daemon did not start"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" ||
	fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"
r=$(probe c1 "$TB_SRV_IP4")
expect "c1 to $TB_SRV_IP4:25 before any reload" "$r" "BANNER 220 gw.example.com*"

# 1. a session open across `mxbridgectl reload` finishes under the old
# snapshot: proxied, alice accepted, delivered by the box
n=$(sessions)
chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test.example" "MAIL FROM:<sender@example.org>" \
	"WAIT=$S/go1" "RCPT TO:<alice@example.com>" "DATA=t-policy-reload old" QUIT \
	>"$S/s1.out" 2>&1 &
s1=$!
wait_for eval '[ "$(wc -l <"$S/s1.out")" -ge 3 ]' ||
	fail "session 1 did not get through MAIL: $(cat "$S/s1.out")"
expect "session 1 MAIL" "$(sed -n 3p "$S/s1.out")" "250*"
[ "$(sessions)" -gt "$n" ] || fail "session 1 was not proxied"
nr=$(reloads)
conf "$S/run.conf" pass 'match to alice@example.com reject "5.7.1 alice is closed"'
out=$(ctl reload 2>&1) || fail "reload of a good config refused: $out"
wait_for eval '[ "$(reloads)" -gt "$nr" ]' || fail "reload not logged"

# new sessions see the new config: pass, Postfix answers itself
n=$(connects "$TB_C1_IP4")
r=$(probe c1 "$TB_SRV_IP4")
expect "c1 to $TB_SRV_IP4:25 after reload to pass" "$r" "BANNER 220 mx.example.com ESMTP*"
wait_for eval '[ "$(connects "$TB_C1_IP4")" -gt "$n" ]' ||
	fail "Postfix did not see the real client $TB_C1_IP4 after the reload"

# now let session 1 finish
touch "$S/go1"
wait "$s1"
expect "session 1 RCPT after the reload" "$(sed -n 5p "$S/s1.out")" "250*"
expect "session 1 DATA after the reload" "$(sed -n 6p "$S/s1.out")" "250*"
expect "session 1 QUIT" "$(sed -n 7p "$S/s1.out")" "221*"
wait_for -t 15 eval 'grep -rlq "^Subject: t-policy-reload old" "$TB_MAILDIR/alice"' ||
	fail "the message of the session open across the reload was not delivered to alice: $(grep -E 'msgid=' "$TB_MXB_LOG" | tail -n 2 | tr '\n' ' ')"
maillog_has "connect from unknown\[$TB_BOX_IP4\]" ||
	fail "alice's message did not come from the box"

# a message on the pass path: Postfix takes it from the real client
tb_smtp_send c1 "$TB_SRV_IP4" sender@example.org bob@example.com "t-policy-reload pass" ||
	fail "SMTP on the pass path after the reload: $(tail -n 1 "$TB_STATE/smtp.out")"
wait_for eval 'grep -rlq "^Subject: t-policy-reload pass" "$TB_MAILDIR/bob"' ||
	fail "mail on the pass path not delivered"
maillog_has "client=unknown\[$TB_C1_IP4\]" || fail "Postfix did not see client $TB_C1_IP4"

# 2. SIGHUP: back to proxy, bob refused by a rule; alice may again
nr=$(reloads)
conf "$S/run.conf" proxy 'match to bob@example.com reject "5.7.1 bob is closed"'
kill -HUP "$(cat "$TB_MXB_PIDFILE")"
wait_for eval '[ "$(reloads)" -gt "$nr" ]' || fail "SIGHUP reload not logged: $(tail -n 2 "$TB_MXB_LOG")"
n=$(sessions)
out=$(chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test.example" "MAIL FROM:<sender@example.org>" \
	"RCPT TO:<bob@example.com>" "RCPT TO:<alice@example.com>" "DATA=t-policy-reload hup" QUIT)
expect "banner after SIGHUP to proxy" "$(echo "$out" | sed -n 1p)" "220 gw.example.com*"
expect "RCPT bob after SIGHUP" "$(echo "$out" | sed -n 4p)" "550 5.7.1 bob is closed*"
expect "RCPT alice after SIGHUP" "$(echo "$out" | sed -n 5p)" "250*"
expect "DATA after SIGHUP" "$(echo "$out" | sed -n 6p)" "250*"
[ "$(sessions)" -gt "$n" ] || fail "session after SIGHUP was not proxied"
wait_for -t 15 eval 'grep -rlq "^Subject: t-policy-reload hup" "$TB_MAILDIR/alice"' ||
	fail "message after SIGHUP not delivered to alice"

# 3. a broken config is refused, by reload and by SIGHUP; the old serves on
cp "$S/run.conf" "$S/good.conf"
{ cat "$S/good.conf"; echo "frobnicate yes"; } >"$S/run.conf"
line=$(wc -l <"$S/run.conf")
nr=$(reloads) nf=$(refusals)
out=$(ctl reload 2>&1); rc=$?
[ $rc -eq 1 ] || fail "reload of a broken config: exit $rc, want 1: $out"
echo "$out" | grep -q "run.conf:$line" || fail "reload refusal lacks FILE:LINE run.conf:$line: $out"
wait_for eval '[ "$(refusals)" -gt "$nf" ]' || fail "refused reload not logged"
grep "reload refused" "$TB_MXB_LOG" | tail -n 1 | grep -q "run.conf:$line" ||
	fail "log of the refused reload lacks run.conf:$line: $(grep "reload refused" "$TB_MXB_LOG" | tail -n 1)"
nf=$(refusals)
kill -HUP "$(cat "$TB_MXB_PIDFILE")"
wait_for eval '[ "$(refusals)" -gt "$nf" ]' || fail "refused SIGHUP reload not logged"
[ "$(reloads)" = "$nr" ] || fail "a broken config was loaded"
mxb_running || fail "daemon died on a broken config"
out=$(chat c1 "$TB_SRV_IP4" 25 "EHLO c1.test.example" "MAIL FROM:<sender@example.org>" \
	"RCPT TO:<bob@example.com>" "RCPT TO:<alice@example.com>" "DATA=t-policy-reload kept" QUIT)
expect "banner after a refused reload" "$(echo "$out" | sed -n 1p)" "220 gw.example.com*"
expect "RCPT bob after a refused reload" "$(echo "$out" | sed -n 4p)" "550 5.7.1 bob is closed*"
expect "RCPT alice after a refused reload" "$(echo "$out" | sed -n 5p)" "250*"
expect "DATA after a refused reload" "$(echo "$out" | sed -n 6p)" "250*"
wait_for -t 15 eval 'grep -rlq "^Subject: t-policy-reload kept" "$TB_MAILDIR/alice"' ||
	fail "message after a refused reload not delivered to alice"

mxb_stop || fail "daemon needed SIGKILL"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "session across reload finishes on the old snapshot, new sessions see the new one, broken config refused"
