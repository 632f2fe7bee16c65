#!/bin/bash
# t-proxy-hostile-text: outside text cannot forge our log lines, and
# addresses must be UTF-8 as RFC 3629 has it.
#   - log injection: on the live relay, an upstream (smuggle.py
#     hostiledot) answers the final dot with ESC sequences, a '"' and
#     ' disposition=forged'; a client sends a sender whose quoted local
#     part holds '" disposition=forged'.  The client still gets the
#     upstream's reply, but the daemon's log has no ESC octet and the
#     message line parses as key=value fields, each key once,
#     disposition=relayed;
#   - SMTPUTF8: overlong forms, surrogates, code points past U+10FFFF,
#     truncated sequences and C1 controls in MAIL FROM or RCPT TO get
#     553 5.6.7, with and without SMTPUTF8; C0 controls get 501; a
#     well-formed UTF-8 address is still taken (250).
. "$(dirname "$0")/t-proxy-common.inc"

CHECK=$TB_REPO/test/textcheck.py
proxy_conf
proxy_up

# 1. the upstream's reply to the final dot, and a hostile sender, logged
fake_up --mode hostiledot
hostile "$FAKE_IP" dotstuff --sender '"x\" disposition=forged"@example.org'
wait_for sink_count "$S/fake" -ge 1 || fail "message not at the fake upstream"
wait_for log_has "disposition=relayed" || fail "no relayed line: $(tail -n 3 "$TB_MXB_LOG")"
python3 "$CHECK" log "$TB_MXB_LOG" " from=<" disposition=relayed >"$S/check.out" 2>&1 ||
	fail "log injection: $(head -n 3 "$S/check.out")"
log_has 'reply="250 2.0.0 Ok \\x1b\[2J\\x1b\]0;pwned\\x07 queued\\" disposition=forged x=\\""' ||
	fail "the upstream's reply not logged escaped: $(grep 'disposition=relayed' "$TB_MXB_LOG" | tail -n 1)"
log_has 'from=<\\"x\\\\\\"\\x20disposition=forged\\"@example.org>' ||
	fail "the sender not logged escaped: $(grep 'disposition=relayed' "$TB_MXB_LOG" | tail -n 1)"

# 2. SMTPUTF8: malformed UTF-8 and controls in addresses, to the MTA
# path of the protected server (the box answers MAIL and RCPT itself)
tb_exec c1 python3 - "$TB_SRV_IP4" >"$S/utf8.out" 2>&1 <<'PY' || fail "UTF-8 checks: $(tail -n 5 "$S/utf8.out")"
import socket, sys
# a few commands per session: the box ends one after too many errors
bad = 0
def session(cases):
    global bad
    s = socket.create_connection((sys.argv[1], 25), timeout=20)
    f = s.makefile("rb")
    def reply():
        while True:
            ln = f.readline()
            if not ln:
                sys.exit("connection closed")
            if ln[3:4] != b"-":
                return ln.decode("utf-8", "replace").rstrip()
    def want(c, code):
        global bad
        s.sendall(c + b"\r\n")
        r = reply()
        print("%r -> %s" % (c, r))
        if not r.startswith(code):
            print("  WANT %s" % code)
            bad += 1
    reply()
    want(b"EHLO c1.test", "250")
    for c, code in cases:
        want(c, code)
    want(b"QUIT", "221")
    s.close()
cases = []
for a in (b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xed\xa0\x80",
          b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xc2\x85", b"\xc2\x9b", b"\xff"):
    cases.append((b"MAIL FROM:<x" + a + b"@example.org> SMTPUTF8", "553 5.6.7"))
    cases.append((b"MAIL FROM:<x" + a + b"@example.org>", "553 5.6.7"))
cases.append((b"MAIL FROM:<x\x1b[31m@example.org> SMTPUTF8", "501"))
for i in range(0, len(cases), 4):
    session(cases[i:i + 4])
rcpt = [(b"RCPT TO:<x" + a + b"@example.com>", "553 5.6.7")
        for a in (b"\xc2\x85", b"\xed\xbf\xbf", b"\xf8\x88\x80\x80\x80")]
rcpt.append((b"RCPT TO:<\"a\xc2\x9bb\"@example.com>", "553 5.6.7"))
session([(b"MAIL FROM:<\xc3\xa9t\xc3\xa9@example.org> SMTPUTF8", "250")] +
        rcpt + [(b"RSET", "250")])
sys.exit(1 if bad else 0)
PY
mxb_running || fail "the daemon died"
grep -q $'\x1b' "$TB_MXB_LOG" && fail "an ESC octet reached the log"

mxb_down
pass "hostile upstream replies and senders are logged escaped (no ESC, no forged field); malformed UTF-8 and C1 in addresses: 553 5.6.7"
