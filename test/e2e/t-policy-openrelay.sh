#!/bin/bash
# shellcheck disable=SC2016,SC2034,SC2254
# (eval'd wait_for conditions, glob patterns in expect on purpose)
# t-policy-openrelay: the gateway is not an open relay, end to end.
# From c2 (192.0.2.102), a client no match rule allows (the rules cover
# only c1, 192.0.2.101), through the incoming proxy (c2 -> 192.0.2.10) and
# through the outgoing proxy with the client's server not honoured
# (c2 -> 192.0.2.20, client-server ignore: the built-in MTA's path), with
# each of MAIL FROM <>, a local sender <alice@example.com> and an outside
# sender <bob@other.example>, every one of the recipients
#   <x@other.example> <"x@other.example"> <x%other.example@example.com>
#   <other.example!x> <@example.com:x@other.example> <x@[192.0.2.21]>
# is refused with 5xx, and nothing arrives anywhere: not at the smtp-sinks
# (ext 192.0.2.20, mx 192.0.2.21, relay host 192.0.2.30, which the config
# names so that anything leaving by the MTA lands there), not in a Maildir,
# not at Postfix at all, and the box's queue stays empty.
# Control case (so that the test can fail): after a reload with a rule
# allowing c2, <x@other.example> is accepted on both paths and arrives.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft
tb_init
BIN=${MXB_BIN:-$TB_REPO/build}
NF=$TB_REPO/scripts/mxbridge-netfilter
S=$TB_STATE/openrelay
Q=4
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

ctl() { tb_exec box "$BIN/mxbridgectl" -s "$S/ctl.sock" "$@"; }
# arrivals: every place a message could land, one number
arrivals() {
	echo $(( $(sink_count "$TB_EXT_DIR") + $(sink_count "$TB_MX_DIR") +
		$(sink_count "$TB_RELAY_DIR") + $(maildir_count alice) +
		$(maildir_count bob) + $(maildir_count postmaster) ))
}
# postfix_clients: connections Postfix accepted from anyone
postfix_clients() { grep -c "connect from unknown\[" "$TB_MAILLOG"; }

# conf FILE RULE...: c1 may relay; nothing else unless RULE says so
conf() {
	local rules=$2
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
client-server default ignore
domain "example.com" {
	server $TB_SRV_IP4
}
relay-host $TB_RELAY_IP4
limits {
	errors 100
}
match client $TB_C1_IP4 relay
$rules
EOF
}

# Postfix would carry anything for other.example to the mx sink, so a
# leak through the protected server shows up there too
echo "other.example smtp:[$TB_MX_IP4]" >>"$TB_STATE/srv/transport"
tb_postfix reload >/dev/null 2>&1 || fail "postfix reload"

conf "$S/run.conf" ""
tb_exec box bash "$NF" up -b br0 -q $Q -i 10025 -o 10026 -F open \
	>"$S/nf.log" 2>&1 || fail "mxbridge-netfilter up: $(tail -n 3 "$S/nf.log")"
mxb_start "$S/run.conf" -v || fail "daemon did not start"
wait_for grep -q "nfq: queue=$Q open" "$TB_MXB_LOG" ||
	fail "queue not open: $(tail -n 5 "$TB_MXB_LOG")"

RCPTS=('<x@other.example>' '<"x@other.example">' '<x%other.example@example.com>'
	'<other.example!x>' '<@example.com:x@other.example>' "<x@[$TB_MX_IP4]>")
SENDERS=('<>' '<alice@example.com>' '<bob@other.example>')

a0=$(arrivals) p0=$(postfix_clients)
for dst in "$TB_SRV_IP4:incoming" "$TB_EXT_IP4:outgoing"; do
	ip=${dst%%:*} dir=${dst#*:}
	for from in "${SENDERS[@]}"; do
		steps=("EHLO c2.test.example" "MAIL FROM:$from")
		for r in "${RCPTS[@]}"; do steps+=("RCPT TO:$r"); done
		steps+=("DATA=t-policy-openrelay" QUIT)
		out=$(chat c2 "$ip" 25 "${steps[@]}")
		echo "$out" >>"$S/battery.out"
		case $(echo "$out" | sed -n 1p) in
		"220 gw.example.com"*) ;;
		*) fail "$dir: c2 -> $ip:25 not greeted by the gateway: $(echo "$out" | head -n 1)" ;;
		esac
		case $(echo "$out" | sed -n 3p) in
		250*) ;;
		*) fail "$dir: MAIL FROM:$from refused, so the recipients were never tried: $(echo "$out" | sed -n 3p)" ;;
		esac
		i=4
		for r in "${RCPTS[@]}"; do
			got=$(echo "$out" | sed -n ${i}p)
			case $got in
			5[0-9][0-9]" "*) ;;
			*) fail "$dir from c2, MAIL FROM:$from RCPT TO:$r: got '$got', want 5xx" ;;
			esac
			i=$((i + 1))
		done
		got=$(echo "$out" | sed -n ${i}p)
		case $got in
		[45][0-9][0-9]" "*) ;;
		*) fail "$dir from c2, MAIL FROM:$from: DATA after refused recipients: '$got'" ;;
		esac
	done
	grep -Eq "session=[0-9]+ client=$TB_C2_IP4:[0-9]+ orig_dst=$ip:25 dir=$dir" "$TB_MXB_LOG" ||
		fail "no $dir session of c2 logged"
done
sleep 2
[ "$(arrivals)" = "$a0" ] || fail "a refused message arrived somewhere ($a0 -> $(arrivals))"
[ "$(postfix_clients)" = "$p0" ] || fail "something connected to Postfix: $(grep 'connect from' "$TB_MAILLOG" | tail -n 1)"
q=$(ctl queue list) || fail "mxbridgectl queue list: $q"
[ -z "$(echo "$q" | grep -v '^[[:space:]]*$')" ] || fail "the box queued something: $(echo "$q" | head -n 2 | tr '\n' ' ')"

# control: a rule allowing c2 lets <x@other.example> through, on both paths
conf "$S/run.conf" "match client $TB_C2_IP4 relay"
out=$(ctl reload 2>&1) || fail "reload refused: $out"
for dst in "$TB_SRV_IP4:incoming" "$TB_EXT_IP4:outgoing"; do
	ip=${dst%%:*} dir=${dst#*:}
	a0=$(arrivals)
	out=$(chat c2 "$ip" 25 "EHLO c2.test.example" "MAIL FROM:<bob@other.example>" \
		"RCPT TO:<x@other.example>" "DATA=t-policy-openrelay control $dir" QUIT)
	case $(echo "$out" | sed -n 4p) in
	250*) ;;
	*) fail "control ($dir): c2 allowed by a rule, RCPT TO:<x@other.example>: $(echo "$out" | sed -n 4p)" ;;
	esac
	case $(echo "$out" | sed -n 5p) in
	250*) ;;
	*) fail "control ($dir): DATA: $(echo "$out" | sed -n 5p)" ;;
	esac
	wait_for -t 15 eval '[ "$(arrivals)" -gt "$a0" ]' ||
		fail "control ($dir): the accepted message arrived nowhere: $(grep -E 'msgid=' "$TB_MXB_LOG" | tail -n 2 | tr '\n' ' ')"
done

mxb_stop || fail "daemon needed SIGKILL"
grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	fail "sanitizer report: $(grep -Em1 -A5 "Sanitizer|runtime error" "$TB_MXB_LOG")"
pass "36 relay attempts refused on the incoming and outgoing proxies, nothing arrived; control accepted"
