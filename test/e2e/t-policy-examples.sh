#!/bin/bash
# t-policy-examples: the EXAMPLES of mxbridge.conf(5) are real.
#   - the text of each example in the man page is byte for byte the file
#     policy/examples/NAME.conf, and each passes `mxbridge -n`;
#   - each runs the box end to end (mxbridge-netfilter up, daemon up), with
#     one message through that exercises its main point:
#       minimal.conf: c1 -> alice@example.com through the incoming proxy,
#         delivered into alice's Maildir by the box (Postfix sees the box);
#       isp.conf: c1 -> 192.0.2.20 on p0 is relayed live to the server it
#         dialled (the ext sink), not queued and routed by MX;
#       failclosed-relayhost.conf (-F closed): c1's outgoing mail, after
#         STARTTLS, is queued and lands at the relay host 192.0.2.30:587
#         with STARTTLS and AUTH (the relay.secret credentials); with the
#         daemon killed, SMTP across the bridge is refused.
# What is changed in the copies the box runs (and only that): spool,
# pidfile and control are moved into this test's state dir (the examples
# name /var/spool and /run, shared with the host), and the failclosed
# example's certificate and key, which name /etc/mxbridge, point at a
# throw-away self-signed pair made here.  relay.secret is copied next to
# the copy (the example reads it relative to its own folder).
# The testbed's smtp-sink on 192.0.2.30 listens on port 25 only and knows
# neither STARTTLS nor real AUTH, so this test runs a small relay host on
# 192.0.2.30:587 (python3) that requires both and records them.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
. "$(dirname "$0")/../lib.sh"
need iptables nft openssl
tb_init
# the examples set no queue-number: queue 0; they run as shipped,
# with the default workers (auto), whatever the suite runs with
MXB_WORKERS=auto
mxb_setup "$TB_STATE/examples" 0
S=$MXB_DIR
MAN=$TB_REPO/man/mxbridge.conf.5
EX=$TB_REPO/policy/examples
mkdir -p "$S/man"
EXAMPLES="minimal isp failclosed-relayhost"
RELAY587=$S/relay587		# dump dir of the python relay host

# ---------------------------------------------------------------- helpers
# RELAY_PY DUMPDIR CERT KEY USER PASS: a relay host on 192.0.2.30:587 that
# requires STARTTLS before AUTH and AUTH before MAIL; one file per message
# with X-Auth-User / X-TLS / X-Client-Addr / X-Mail-Args / X-Rcpt-Args.
RELAY_PY='
import base64, socket, ssl, sys, os, threading, time
ddir, cert, key, user, pw = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("192.0.2.30", 587)); ls.listen(16)
def serve(c, addr):
    st = {"tls": False, "auth": None, "mail": None, "rcpt": []}
    f = c.makefile("rb")
    def say(x):
        c.sendall((x + "\r\n").encode())
    say("220 relay587.example.org ESMTP test relay")
    while True:
        l = f.readline()
        if not l:
            return
        l = l.decode(errors="replace").rstrip("\r\n")
        u = l.upper()
        if u.startswith("EHLO"):
            caps = ["relay587.example.org", "PIPELINING", "8BITMIME"]
            caps += ["AUTH PLAIN LOGIN"] if st["tls"] else ["STARTTLS"]
            for x in caps[:-1]:
                say("250-" + x)
            say("250 " + caps[-1])
        elif u.startswith("HELO"):
            say("250 relay587.example.org")
        elif u == "STARTTLS" and not st["tls"]:
            say("220 2.0.0 go ahead")
            c = ctx.wrap_socket(c, server_side=True)
            f = c.makefile("rb")
            st = {"tls": True, "auth": None, "mail": None, "rcpt": []}
        elif u.startswith("AUTH "):
            if not st["tls"]:
                say("538 5.7.11 Encryption required"); continue
            a = l.split()
            if a[1].upper() == "PLAIN":
                if len(a) > 2:
                    tok = a[2]
                else:
                    say("334 "); tok = f.readline().decode().strip()
                try:
                    _, uu, pp = base64.b64decode(tok).decode().split("\0")
                except Exception:
                    say("501 5.5.2 bad token"); continue
            elif a[1].upper() == "LOGIN":
                if len(a) > 2:
                    uu = base64.b64decode(a[2]).decode()
                else:
                    say("334 VXNlcm5hbWU6")
                    uu = base64.b64decode(f.readline().strip()).decode()
                say("334 UGFzc3dvcmQ6")
                pp = base64.b64decode(f.readline().strip()).decode()
            else:
                say("504 5.5.4 mechanism"); continue
            if (uu, pp) == (user, pw):
                st["auth"] = uu; say("235 2.7.0 Authentication successful")
            else:
                say("535 5.7.8 Authentication credentials invalid")
        elif u.startswith("MAIL FROM:"):
            if st["auth"] is None:
                say("530 5.7.0 Authentication required"); continue
            st["mail"] = l[10:]; st["rcpt"] = []; say("250 2.1.0 Ok")
        elif u.startswith("RCPT TO:"):
            st["rcpt"].append(l[8:]); say("250 2.1.5 Ok")
        elif u == "DATA":
            if not st["rcpt"]:
                say("554 5.5.1 no recipients"); continue
            say("354 go ahead")
            body = []
            while True:
                x = f.readline()
                if not x or x in (b".\r\n", b".\n"):
                    break
                body.append(x.decode(errors="replace"))
            name = os.path.join(ddir, "%d.%d" % (time.time_ns(), threading.get_ident()))
            with open(name + ".tmp", "w") as o:
                o.write("X-Auth-User: %s\nX-TLS: %s\nX-Client-Addr: %s\n"
                        "X-Mail-Args: %s\nX-Rcpt-Args: %s\n" % (st["auth"],
                        "yes" if st["tls"] else "no", addr[0], st["mail"],
                        " ".join(st["rcpt"])))
                o.write("".join(body))
            os.rename(name + ".tmp", name)
            st["mail"] = None; st["rcpt"] = []
            say("250 2.0.0 Ok: queued")
        elif u == "RSET":
            st["mail"] = None; st["rcpt"] = []; say("250 2.0.0 Ok")
        elif u == "NOOP":
            say("250 2.0.0 Ok")
        elif u == "QUIT":
            say("221 2.0.0 Bye"); c.close(); return
        else:
            say("502 5.5.2 not implemented")
def run(c, a):
    try:
        serve(c, a)
    except Exception as e:
        print("session error: %s" % e, flush=True)
    finally:
        try: c.close()
        except Exception: pass
while True:
    c, a = ls.accept()
    threading.Thread(target=run, args=(c, a), daemon=True).start()
'

# runcopy NAME: the example as the box runs it, $CONF = $S/NAME/NAME.conf
# (see the top)
runcopy() {
	local name=$1 d=$S/$1 f
	mxb_statedir "$d"
	f=$d/$name.conf
	CONF=$f
	# drop the three path statements, then set them to the state dir
	grep -Ev '^[[:space:]]*(spool|pidfile|control)[[:space:]]' "$EX/$name.conf" >"$f"
	printf '\n# t-policy-examples: paths moved into the test state dir\n' >>"$f"
	printf 'spool "%s"\npidfile "%s"\ncontrol "%s"\n' \
		"$d/spool" "$d/mxbridge.pid" "$d/ctl.sock" >>"$f"
	if grep -q '^[[:space:]]*tls certificate' "$f"; then
		sed -i "s|^\([[:space:]]*\)tls certificate .*|\1tls certificate \"$S/cert.pem\" key \"$S/key.pem\"|" "$f"
	fi
	[ -e "$EX/relay.secret" ] && cp "$EX/relay.secret" "$d/" &&
		chmod 600 "$d/relay.secret"
	# the copy differs from the example in those lines only
	diff <(grep -Ev '^[[:space:]]*(spool|pidfile|control|tls certificate)[[:space:]]|^#|^$' "$EX/$name.conf") \
	     <(grep -Ev '^[[:space:]]*(spool|pidfile|control|tls certificate)[[:space:]]|^#|^$' "$f") \
		>/dev/null || fail "internal: the run copy of $name.conf differs from the example"
	"$MXB_BINDIR/mxbridge" -n -f "$f" >"$d/n.out" 2>&1 ||
		fail "-n on the run copy of $name.conf: $(cat "$d/n.out")"
}
PROBLEMS=()
problem() { PROBLEMS+=("$*"); note "$*"; }

# ---------------------------------------------------------------- 1. text
# the literal blocks of EXAMPLES, each named by the ".Pa NAME.conf" before it
awk -v dir="$S/man" '
	/^\.Sh / { ex = ($2 == "EXAMPLES") }
	!ex { next }
	/^\.Pa [A-Za-z0-9_.-]+\.conf/ { name = $2; next }
	/^\.Bd -literal/ { if (name == "") { print "literal block without a name" > "/dev/stderr"; exit 1 }
		out = dir "/" name; printf "" > out; lit = 1; next }
	/^\.Ed/ { if (lit) { close(out); name = "" } lit = 0; next }
	lit { gsub(/\\&/, ""); gsub(/\\e/, "\\"); gsub(/\\-/, "-"); print > out }
' "$MAN" || fail "cannot read the EXAMPLES of $MAN"
# a clone does not keep file modes: the credentials file beside the
# examples is made private here, as an admin would, so -n has no warning
cp "$EX/relay.secret" "$S/man/relay.secret" && chmod 600 "$S/man/relay.secret"
for e in $EXAMPLES; do
	[ -f "$EX/$e.conf" ] || fail "policy/examples/$e.conf missing"
	[ -f "$S/man/$e.conf" ] || fail "mxbridge.conf(5) EXAMPLES lack $e.conf"
	cmp -s "$S/man/$e.conf" "$EX/$e.conf" ||
		fail "$e.conf: man page and policy/examples differ: $(diff "$S/man/$e.conf" "$EX/$e.conf" | head -n 3 | tr '\n' ' ')"
	out=$("$MXB_BINDIR/mxbridge" -n -f "$S/man/$e.conf" 2>&1) ||
		fail "mxbridge -n $e.conf: $out"
	[ "$out" = "configuration OK" ] || fail "mxbridge -n $e.conf said: $out"
done
for f in "$S"/man/*.conf; do
	case " $EXAMPLES " in *" $(basename "$f" .conf) "*) ;;
	*) fail "EXAMPLES has $(basename "$f"), which this test does not know" ;; esac
done

# a throw-away certificate: the gateway's (failclosed) and the relay host's
tb_make_cert "$S"

# ---------------------------------------------------------------- 2. minimal
mxb_nf_up open
runcopy minimal
mxb_start_queue "$CONF"
n=$(maillog_connects "$TB_C1_IP4")
tb_smtp_send c1 "$TB_SRV_IP4" sender@example.org alice@example.com "t-policy-examples minimal" ||
	problem "minimal: c1 -> alice@example.com refused: $(tail -n 1 "$TB_STATE/smtp.out")"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_SRV_IP4:25 dir=incoming" "$TB_MXB_LOG" ||
	problem "minimal: no incoming session logged for c1"
if wait_for -t 15 maildir_count alice -ge 1; then
	[ "$(maillog_connects "$TB_C1_IP4")" = "$n" ] ||
		problem "minimal: the message reached Postfix from c1 itself, not through the box"
	maillog_has "connect from unknown\[$TB_BOX_IP4\]" ||
		problem "minimal: Postfix never saw the box deliver"
else
	problem "minimal: not delivered to alice's Maildir: $(grep -E 'msgid=|session=' "$TB_MXB_LOG" | tail -n 2 | tr '\n' ' ')"
fi
mxb_stop || problem "minimal: daemon needed SIGKILL"

# ---------------------------------------------------------------- 3. isp
runcopy isp
mxb_start_queue "$CONF"
before_mx=$(sink_count "$TB_MX_DIR")
tb_smtp_send c1 "$TB_EXT_IP4" alice@example.com someone@example.net "t-policy-examples isp" ||
	problem "isp: c1 -> $TB_EXT_IP4 refused: $(tail -n 1 "$TB_STATE/smtp.out")"
grep -Eq "session=[0-9]+ client=$TB_C1_IP4:[0-9]+ orig_dst=$TB_EXT_IP4:25 dir=outgoing port=p0" "$TB_MXB_LOG" ||
	problem "isp: c1's session to $TB_EXT_IP4 was not proxied (no outgoing session logged)"
wait_for -t 10 mail_has "$TB_EXT_DIR" "t-policy-examples isp" ||
	problem "isp: the message did not reach the server c1 dialled ($TB_EXT_IP4)"
sleep 0.5
[ "$(sink_count "$TB_MX_DIR")" = "$before_mx" ] ||
	problem "isp: the message also went to the MX (queued instead of relayed live)"
mxb_stop || problem "isp: daemon needed SIGKILL"

# ---------------------------------------------------------------- 4. failclosed
mkdir -p "$RELAY587"
tb_exec out python3 -u -c "$RELAY_PY" "$RELAY587" "$S/cert.pem" "$S/key.pem" \
	mxbridge example-secret >"$S/relay587.log" 2>&1 &
echo $! >"$TB_STATE/pids/out.relay587.pid"	# testbed.sh down stops it
wait_for tbd_listening_tcp out "$TB_RELAY_IP4:587" 587 ||
	fail "test relay host on $TB_RELAY_IP4:587 did not start: $(cat "$S/relay587.log")"
mxb_nf_up closed
runcopy failclosed-relayhost
mxb_start_queue "$CONF"
before_ext=$(sink_count "$TB_EXT_DIR") before_mx=$(sink_count "$TB_MX_DIR")
# the gateway asks for STARTTLS before mail goes out; AUTH if it offers it
out=$(tb_chat c1 "$TB_EXT_IP4" 25 "EHLO c1.test.example" STARTTLS "EHLO c1.test.example")
auth=()
case $(echo "$out" | sed -n 4p) in *AUTH*) auth=("AUTH mxbridge example-secret") ;; esac
out=$(tb_chat c1 "$TB_EXT_IP4" 25 "EHLO c1.test.example" STARTTLS "EHLO c1.test.example" \
	"${auth[@]}" "MAIL FROM:<alice@example.com>" "RCPT TO:<someone@example.net>" \
	"DATA=t-policy-examples failclosed" QUIT)
echo "$out" >"$S/failclosed-chat.out"
st=$(echo "$out" | awk '{ printf "%s ", $1 }')
want="220 250 220 250 ${auth:+235 }250 250 250 221 "
case $st in
"$want")
	if wait_for -t 15 mail_has "$RELAY587" "t-policy-examples failclosed"; then
		f=$(mail_file "$RELAY587" "t-policy-examples failclosed")
		grep -q '^X-Auth-User: mxbridge$' "$f" || problem "failclosed: relay host got the mail without AUTH"
		grep -q '^X-TLS: yes$' "$f" || problem "failclosed: relay host got the mail without STARTTLS"
	else
		problem "failclosed: accepted, but never reached the relay host $TB_RELAY_IP4:587: $(grep -E 'msgid=|mta:' "$TB_MXB_LOG" | tail -n 2 | tr '\n' ' ')"
	fi ;;
*)
	problem "failclosed: c1's outgoing mail (STARTTLS${auth:+, AUTH}) not accepted: $(echo "$out" | grep -Ev '^(2[0-9][0-9]|354) ' | head -n 1)" ;;
esac
sleep 0.5
[ "$(sink_count "$TB_EXT_DIR")" = "$before_ext" ] || problem "failclosed: mail went to the dialled server"
[ "$(sink_count "$TB_MX_DIR")" = "$before_mx" ] || problem "failclosed: mail went to the MX, not the relay host"

# fail-closed: the daemon killed, SMTP across the bridge is refused
mxb_kill
n=$(maillog_connects "$TB_C1_IP4") before_ext=$(sink_count "$TB_EXT_DIR")
for dst in "$TB_SRV_IP4" "$TB_EXT_IP4"; do
	r=$(tb_banner c1 "$dst" 25 5)
	case $r in
	REFUSED|RESET|TIMEOUT|EOF) ;;
	*) problem "failclosed: daemon killed, c1 -> $dst:25 got '$r'" ;;
	esac
done
sleep 0.5
[ "$(maillog_connects "$TB_C1_IP4")" = "$n" ] || problem "failclosed: daemon killed, a connection reached Postfix"
[ "$(sink_count "$TB_EXT_DIR")" = "$before_ext" ] || problem "failclosed: daemon killed, mail reached $TB_EXT_IP4"

grep -Eq "Sanitizer|runtime error" "$TB_MXB_LOG" &&
	problem "sanitizer report: $(grep -Em1 "Sanitizer|runtime error" "$TB_MXB_LOG")"
[ ${#PROBLEMS[@]} -eq 0 ] || fail "$(printf '%s; ' "${PROBLEMS[@]}" | sed 's/; $//')"
pass "3 examples identical in the man page, -n OK, minimal/isp/failclosed end to end"
