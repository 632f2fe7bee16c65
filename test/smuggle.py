#!/usr/bin/env python3
"""smuggle.py - hostile SMTP peers for the proxy's end-to-end tests.

Client side (self-checking: exit 0 when the server behaved, 1 with a
reason otherwise):

  smuggle.py client HOST PORT CASE [options]
    smuggle     the DATA smuggling battery: each of \\n.\\n \\r.\\r ... is
                followed by a smuggled MAIL/RCPT/DATA; the final reply
                must not be 2xx and no smuggled command may get a reply
    dotstuff    a body with ".", "..", ".x" lines: 250
    pipeline    MAIL/RCPT/RCPT/DATA in one write: replies in order
    longcmd     a 2000-octet command: 500, then the session goes on
    longline    a 2000-octet body line: 5xx at the dot
    rcpts N     N+3 recipients: N accepted, then 452 4.5.3
    size N      SIZE=N+1 at MAIL: 552; a body over N octets: 552 at the dot
    errors N    unknown commands until 421
    idle        say EHLO, then nothing: 421 4.4.2 and the close
    trickle     a command trickled one octet a second: 421 and the close
    noread      NOOPs until the server takes no more, never reading the
                replies, then N s of silence (the caller checks the drop)
    slowdata    DATA at a few octets a second: 421 (minimum data rate)
    starttls    STARTTLS with a MAIL pipelined behind it: the MAIL is gone
    auth        AUTH PLAIN with a 334 round trip, then a message: 235, 250
    tlsauth     STARTTLS, then AUTH PLAIN with an initial response
    tlssend     STARTTLS, then a message with subject --mode
    authclear   AUTH without TLS where it is offered only in TLS: 538
    expect-fail any command: the session must end with 421 or a close
                (upstream misbehaving), never with an injected reply

Server side (a fake upstream):

  smuggle.py serve ADDR PORT [--mode MODE] [--auth] [--tls CERT KEY]
                             [--dir DIR]
    modes: normal, longreply (a 600-octet reply line), manylines (5000
    continuation lines), nul, barelf, pretls (bytes right after the 220
    to STARTTLS), inject (an unsolicited reply after RCPT), caps (offers
    CHUNKING, BDAT, XCLIENT, BINARYMIME, AUTH=LOGIN), dropdata (closes in
    the middle of DATA), authtls (AUTH offered only inside TLS), badtls
    (a TLS alert instead of a handshake, then close: a server with broken
    TLS), hostile550 (RCPT of a local part starting "bad" gets a
    multi-line 550 with ESC sequences, quotes, C0/C1/DEL octets and text
    that looks like log fields and DSN fields), hostiledot (the final dot
    gets a 250 with ESC sequences, quotes and a forged log field).
    Messages are written to DIR, one file each; with --raw also the DATA
    octets exactly as received, dot-stuffing and CRLFs kept, in FILE.raw.
"""
import argparse
import base64
import os
import socket
import ssl
import sys
import threading
import time

SEQS = [
    ("\\n.\\n", b"\n.\n"),
    ("\\r.\\r", b"\r.\r"),
    ("\\r.\\n", b"\r.\n"),
    ("\\n.\\r", b"\n.\r"),
    ("\\n.\\r\\n", b"\n.\r\n"),
    ("\\r\\n.\\n", b"\r\n.\n"),
    ("\\r.\\r\\n", b"\r.\r\n"),
    ("\\r\\n.\\r", b"\r\n.\r"),
    ("\\r\\n\\0.\\r\\n", b"\r\n\0.\r\n"),
]


def die(msg):
    print("FAIL: " + msg)
    sys.exit(1)


class Client:
    def __init__(self, host, port, timeout=15):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.log = []

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.log.append(">> " + repr(data)[:200])
        self.s.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("connection closed")
            self.buf += d
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln

    def reply(self):
        """(code, [lines]) of one reply; EOFError when closed"""
        lines = []
        while True:
            ln = self.line()
            if not ln.endswith(b"\r") or b"\0" in ln:
                raise ValueError("malformed reply line %r" % ln)
            ln = ln[:-1].decode(errors="replace")
            lines.append(ln)
            self.log.append("<< " + ln[:200])
            if len(ln) < 4 or ln[3] != "-":
                return int(ln[:3]), lines

    def closed(self, timeout=10):
        """True when the server closes (EOF or reset) within timeout"""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.s = ctx.wrap_socket(self.s)
        self.buf = b""
        return self.s.version() + "/" + self.s.cipher()[0]

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def expect(got, want, what):
    code = got[0]
    if isinstance(want, int):
        ok = code == want
    else:
        ok = str(code).startswith(want)
    if not ok:
        die("%s: got %r, want %s" % (what, got, want))


def greet(c, helo="hostile.test"):
    expect(c.reply(), 220, "greeting")
    expect(c.cmd("EHLO " + helo), 250, "EHLO")


def case_smuggle(a):
    for name, seq in SEQS:
        c = Client(a.host, a.port)
        greet(c)
        expect(c.cmd("MAIL FROM:<%s>" % a.sender), 250, name + " MAIL")
        expect(c.cmd("RCPT TO:<%s>" % a.rcpt), 250, name + " RCPT")
        expect(c.cmd("DATA"), 354, name + " DATA")
        body = (b"Subject: smuggle test\r\n\r\nfirst message" + seq +
                b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<" +
                a.rcpt.encode() + b">\r\nDATA\r\nSubject: SMUGGLED\r\n\r\n"
                b"smuggled body\r\n.\r\n")
        c.send(body)
        r = c.reply()
        if r[0] < 400:
            die("%s: the message was accepted: %r" % (name, r))
        # nothing else may answer: QUIT gets 221 or 421, then the close
        try:
            q = c.cmd("QUIT")
            if q[0] not in (221, 421):
                die("%s: an extra reply after the dot: %r" % (name, q))
        except (EOFError, ConnectionResetError):
            pass
        c.close()
        print("ok %s -> %d" % (name, r[0]))


def send_message(c, a, body, want_dot="2"):
    expect(c.cmd("MAIL FROM:<%s>" % a.sender), 250, "MAIL")
    expect(c.cmd("RCPT TO:<%s>" % a.rcpt), 250, "RCPT")
    expect(c.cmd("DATA"), 354, "DATA")
    c.send(body + b".\r\n")
    r = c.reply()
    expect(r, want_dot, "end of DATA")
    return r


def case_dotstuff(a):
    c = Client(a.host, a.port)
    greet(c)
    body = (b"Subject: dotstuff test\r\n\r\n..\r\n...\r\n..leading\r\n"
            b"trailing.\r\n .space\r\nend\r\n")
    send_message(c, a, body)
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok")


def case_pipeline(a):
    c = Client(a.host, a.port)
    greet(c)
    c.send("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nRCPT TO:<bad syntax>\r\n"
           "RCPT TO:<%s>\r\nDATA\r\n" % (a.sender, a.rcpt, a.rcpt))
    expect(c.reply(), 250, "MAIL")
    expect(c.reply(), 250, "RCPT 1")
    expect(c.reply(), 501, "RCPT 2 (bad syntax)")
    expect(c.reply(), 250, "RCPT 3")
    expect(c.reply(), 354, "DATA")
    c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    expect(c.reply(), "2", "dot")
    expect(c.reply(), 250, "NOOP")
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok")


def case_longcmd(a):
    c = Client(a.host, a.port)
    greet(c)
    expect(c.cmd("NOOP " + "x" * 2000), 500, "long command")
    expect(c.cmd("MAIL FROM:<" + "a" * 600 + "@example.org>"), 500,
           "long MAIL")
    expect(c.cmd("NOOP"), 250, "NOOP after")
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok")


def case_longline(a):
    c = Client(a.host, a.port)
    greet(c)
    r = send_message(c, a, b"Subject: long\r\n\r\n" + b"x" * 2000 +
                     b"\r\n", want_dot="5")
    print("ok %r" % (r,))


def case_rcpts(a):
    c = Client(a.host, a.port)
    greet(c)
    n = a.n
    expect(c.cmd("MAIL FROM:<%s>" % a.sender), 250, "MAIL")
    for i in range(n + 3):
        r = c.cmd("RCPT TO:<r%d@%s>" % (i, a.rcpt.split("@")[1]))
        if i < n:
            expect(r, 250, "RCPT %d" % i)
        else:
            expect(r, 452, "RCPT %d" % i)
            if "4.5.3" not in r[1][0]:
                die("no 4.5.3 in %r" % (r,))
    expect(c.cmd("DATA"), 354, "DATA")
    c.send(b"Subject: many\r\n\r\nx\r\n.\r\n")
    expect(c.reply(), "2", "dot")
    print("ok")


def case_size(a):
    c = Client(a.host, a.port)
    greet(c)
    expect(c.cmd("MAIL FROM:<%s> SIZE=%d" % (a.sender, a.n + 1)), 552,
           "MAIL SIZE")
    body = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * (a.n // 70 + 2)
    r = send_message(c, a, body, want_dot="552")
    print("ok %r" % (r,))


def case_errors(a):
    c = Client(a.host, a.port)
    greet(c)
    for i in range(a.n + 5):
        try:
            r = c.cmd("BOGUS%d" % i)
        except (EOFError, ConnectionResetError):
            die("closed without 421 after %d errors" % i)
        if r[0] == 421:
            if not c.closed():
                die("421 but no close")
            print("ok 421 after %d errors" % i)
            return
        expect(r, "5", "error %d" % i)
    die("no 421 after %d errors" % (a.n + 5))


def case_idle(a):
    c = Client(a.host, a.port, timeout=a.n + 30)
    greet(c)
    t0 = time.time()
    r = c.reply()
    expect(r, 421, "idle")
    if not c.closed():
        die("421 but no close")
    print("ok 421 after %.1fs" % (time.time() - t0))


def case_noread(a):
    """a client that never reads: NOOPs after the greeting until the
    server takes no more (its replies fill both windows), then silence
    for n seconds, still not reading.  The server must end the session
    by itself; the caller checks the daemon's log."""
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(15)
    s.connect((a.host, a.port))
    greeting = b""
    while b"\n" not in greeting:
        d = s.recv(1)
        if not d:
            die("closed before the greeting")
        greeting += d
    s.settimeout(5)
    sent, chunk = 0, b"NOOP\r\n" * 1000
    try:
        while True:
            sent += s.send(chunk)
    except socket.timeout:
        pass
    except (BrokenPipeError, ConnectionResetError):
        die("closed while still taking commands, after %d bytes" % sent)
    print("ok port %d: %d bytes of NOOP taken, then not reading for %ds" %
          (s.getsockname()[1], sent, a.n))
    sys.stdout.flush()
    time.sleep(a.n)
    s.close()


def case_trickle(a):
    c = Client(a.host, a.port, timeout=a.n + 30)
    greet(c)
    t0 = time.time()
    c.s.settimeout(1)
    for ch in "NOOP " + "z" * 400:
        try:
            c.send(ch)
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            d = c.s.recv(4096)
            c.buf += d
            if not d or b"421" in c.buf:
                break
        except socket.timeout:
            pass
        if time.time() - t0 > a.n + 20:
            die("still open after %.0fs" % (time.time() - t0))
    if b"421 4.4.2" not in c.buf:
        die("no 421 4.4.2: %r" % c.buf)
    print("ok 421 after %.1fs" % (time.time() - t0))


def case_slowdata(a):
    c = Client(a.host, a.port, timeout=120)
    greet(c)
    expect(c.cmd("MAIL FROM:<%s>" % a.sender), 250, "MAIL")
    expect(c.cmd("RCPT TO:<%s>" % a.rcpt), 250, "RCPT")
    expect(c.cmd("DATA"), 354, "DATA")
    t0 = time.time()
    c.s.settimeout(0.5)
    while time.time() - t0 < 90:
        try:
            c.send(b"slow\r\n")
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            d = c.s.recv(4096)
            c.buf += d
            if not d or b"421" in c.buf:
                break
        except socket.timeout:
            pass
    if b"421 4.4.2" not in c.buf:
        die("no 421 4.4.2 within 90s: %r" % c.buf)
    print("ok 421 after %.1fs" % (time.time() - t0))


def case_starttls(a):
    c = Client(a.host, a.port)
    greet(c)
    c.send("STARTTLS\r\nMAIL FROM:<pipelined@example.org>\r\n")
    expect(c.reply(), 220, "STARTTLS")
    if c.buf:
        die("bytes after the 220: %r" % c.buf)
    info = c.starttls()
    r = c.cmd("EHLO hostile.test")
    expect(r, 250, "EHLO after TLS (a stale MAIL reply would show here)")
    if any("STARTTLS" in ln for ln in r[1]):
        die("STARTTLS offered again inside TLS")
    expect(c.cmd("MAIL FROM:<%s>" % a.sender), 250, "MAIL in TLS")
    expect(c.cmd("RSET"), 250, "RSET")
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok " + info)


def auth_plain(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            pw.encode()).decode()


def case_auth(a, tls=False):
    c = Client(a.host, a.port)
    expect(c.reply(), 220, "greeting")
    r = c.cmd("EHLO hostile.test")
    if tls:
        expect(c.cmd("STARTTLS"), 220, "STARTTLS")
        c.starttls()
        r = c.cmd("EHLO hostile.test")
    expect(r, 250, "EHLO")
    if not any(ln[4:].upper().startswith("AUTH") for ln in r[1]):
        die("no AUTH offered: %r" % (r,))
    expect(c.cmd("MAIL FROM:<%s>" % a.sender), 530, "MAIL before AUTH")
    if tls:
        expect(c.cmd("AUTH PLAIN " + auth_plain("user", "pass")), 235,
               "AUTH PLAIN ir")
    else:
        expect(c.cmd("AUTH PLAIN"), 334, "AUTH PLAIN")
        expect(c.cmd(auth_plain("user", "wrong")), 535, "bad password")
        expect(c.cmd("AUTH LOGIN"), 334, "AUTH LOGIN")
        expect(c.cmd("*"), 501, "cancelled")
        expect(c.cmd("AUTH PLAIN"), 334, "AUTH PLAIN")
        expect(c.cmd(auth_plain("user", "pass")), 235, "good password")
    send_message(c, a, b"Subject: authed\r\n\r\nauthed body\r\n")
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok")


def case_authclear(a):
    """AUTH in the clear where the upstream offers it only in TLS: 538"""
    c = Client(a.host, a.port)
    greet(c)
    expect(c.cmd("AUTH PLAIN " + auth_plain("user", "pass")), 538,
           "AUTH in the clear")
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok")


def case_tlssend(a):
    """STARTTLS, then one message (stands in for swaks --tls)"""
    c = Client(a.host, a.port)
    greet(c)
    expect(c.cmd("STARTTLS"), 220, "STARTTLS")
    info = c.starttls()
    expect(c.cmd("EHLO hostile.test"), 250, "EHLO in TLS")
    send_message(c, a, ("Subject: %s\r\n\r\nover TLS\r\n" %
                        (a.mode or "tlssend")).encode())
    expect(c.cmd("QUIT"), 221, "QUIT")
    print("ok " + info)


def case_expect_fail(a):
    """the upstream misbehaves: 421 or a close, never a 2xx after it"""
    c = Client(a.host, a.port)
    try:
        r = c.reply()
        if r[0] != 220:
            expect(r, 421, "greeting")
            print("ok greeting %d" % r[0])
            return
        for line in ["EHLO hostile.test", "MAIL FROM:<%s>" % a.sender,
                     "RCPT TO:<%s>" % a.rcpt, "DATA"]:
            r = c.cmd(line)
            if r[0] == 421:
                if not c.closed():
                    die("421 but no close")
                print("ok 421 at %s" % line.split()[0])
                return
            if r[0] == 354:
                c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
                r = c.reply()
                if r[0] == 421:
                    print("ok 421 at the dot")
                    return
                die("message accepted: %r" % (r,))
            if line.startswith("RCPT") and r[0] == 250 and \
                    a.mode == "inject":
                # the injected reply must not be passed to us
                r2 = c.cmd("NOOP")
                if r2[0] == 421:
                    print("ok 421 after the injection")
                    return
                die("session went on after an injected reply: %r" % (r2,))
        die("no failure seen")
    except (EOFError, ConnectionResetError):
        print("ok closed")


# what a hostile server says: terminal escapes (clear screen, set the
# window title, colours), quotes that would end a quoted log value, text
# that looks like log fields and DSN fields, C0, DEL and C1 octets and an
# overlong UTF-8 form; never NUL, CR or LF (the reply parser refuses those)
HOSTILE_550 = (b"550-5.1.1 \x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m \"quoted\" "
               b"disposition=delivered status=\"sent\"\r\n"
               b"550-Action: delivered\r\n"
               b"550-weird \x01\x7f\xc2\x85\xc2\x9b\xc0\xaf\xff bytes\\\r\n"
               b"550 5.1.1 user unknown\r\n")
HOSTILE_DOT = (b"250 2.0.0 Ok \x1b[2J\x1b]0;pwned\x07 queued\" disposition=forged "
               b"x=\"\r\n")


def serve(a):
    if a.dir:
        os.makedirs(a.dir, exist_ok=True)
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.host, a.port))
    ls.listen(64)
    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
    n = [0]
    while True:
        s, peer = ls.accept()
        n[0] += 1
        print("accept %d from %s" % (n[0], peer[0]), flush=True)
        threading.Thread(target=session, args=(a, s, ctx, n[0]),
                         daemon=True).start()


def session(a, s, ctx, num):
    f = {"buf": b"", "s": s, "authed": False}
    mode = a.mode

    def out(data):
        if isinstance(data, str):
            data = data.encode()
        f["s"].sendall(data)

    def line():
        while b"\n" not in f["buf"]:
            d = f["s"].recv(65536)
            if not d:
                raise EOFError
            f["buf"] += d
        ln, f["buf"] = f["buf"].split(b"\n", 1)
        f["raw"] = ln + b"\n"
        return ln.rstrip(b"\r").decode(errors="replace")

    try:
        out("220 fake.upstream ESMTP ready\r\n")
        tls = False
        while True:
            ln = line()
            verb = ln.split(" ")[0].upper()
            if verb == "EHLO":
                caps = ["fake.upstream greets you", "PIPELINING",
                        "SIZE 10240000", "8BITMIME",
                        "ENHANCEDSTATUSCODES", "DSN"]
                if a.auth and (tls or mode != "authtls"):
                    caps.append("AUTH PLAIN LOGIN")
                if ctx and not tls:
                    caps.append("STARTTLS")
                if mode == "caps":
                    caps += ["CHUNKING", "BINARYMIME", "XCLIENT NAME ADDR",
                             "AUTH=LOGIN", "ETRN", "X-SECRET", "SMTPUTF8"]
                if mode == "longreply":
                    caps.append("X" * 600)
                if mode == "manylines":
                    caps += ["X-LINE-%d" % i for i in range(5000)]
                body = "".join("250-%s\r\n" % c for c in caps[:-1])
                out(body + "250 %s\r\n" % caps[-1])
            elif verb == "HELO":
                out("250 fake.upstream\r\n")
            elif verb == "STARTTLS" and ctx and not tls:
                if mode == "badtls":
                    # a fatal handshake_failure alert, and goodbye
                    out("220 2.0.0 go ahead\r\n")
                    f["s"].recv(65536)
                    out(b"\x15\x03\x03\x00\x02\x02\x28")
                    f["s"].close()
                    return
                if mode == "pretls":
                    out("220 2.0.0 go ahead\r\n250 injected\r\n")
                else:
                    out("220 2.0.0 go ahead\r\n")
                f["s"] = ctx.wrap_socket(f["s"], server_side=True)
                f["buf"] = b""
                tls = True
            elif verb == "AUTH" and a.auth:
                parts = ln.split(" ")
                mech = parts[1].upper() if len(parts) > 1 else ""
                if mech == "PLAIN":
                    resp = parts[2] if len(parts) > 2 else None
                    if resp is None:
                        out("334 \r\n")
                        resp = line()
                    if resp == "*":
                        out("501 5.7.0 cancelled\r\n")
                        continue
                    try:
                        dec = base64.b64decode(resp).split(b"\0")
                    except Exception:
                        dec = []
                    if dec[1:] == [b"user", b"pass"]:
                        f["authed"] = True
                        out("235 2.7.0 Authentication successful\r\n")
                    else:
                        out("535 5.7.8 bad credentials\r\n")
                elif mech == "LOGIN":
                    out("334 VXNlcm5hbWU6\r\n")
                    u = line()
                    if u == "*":
                        out("501 5.7.0 cancelled\r\n")
                        continue
                    out("334 UGFzc3dvcmQ6\r\n")
                    p = line()
                    ok = (base64.b64decode(u) == b"user" and
                          base64.b64decode(p) == b"pass")
                    f["authed"] = ok
                    out("235 2.7.0 ok\r\n" if ok else "535 5.7.8 no\r\n")
                else:
                    out("504 5.5.4 unknown mechanism\r\n")
            elif verb == "MAIL":
                if a.auth and not f["authed"]:
                    out("530 5.7.0 Authentication required\r\n")
                elif mode == "nul":
                    out("250 2.1.0 o\0k\r\n")
                elif mode == "barelf":
                    out("250 2.1.0 ok\n")
                else:
                    out("250 2.1.0 Ok\r\n")
                f["from"] = ln
                f["rcpts"] = []
            elif verb == "RCPT":
                f.setdefault("rcpts", []).append(ln)
                if mode == "inject":
                    out("250 2.1.5 Ok\r\n250 2.0.0 injected\r\n")
                elif mode == "hostile550" and ln.split(":", 1)[-1].strip(
                        ).lstrip("<").startswith("bad"):
                    out(HOSTILE_550)
                else:
                    out("250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                out("354 go ahead\r\n")
                data = []
                raw = b""
                while True:
                    d = line()
                    if d == ".":
                        break
                    raw += f["raw"]
                    data.append(d[1:] if d.startswith(".") else d)
                    if mode == "dropdata" and len(data) >= 1:
                        f["s"].close()
                        return
                if a.dir:
                    name = os.path.join(a.dir, "%d.%d.%f" %
                                        (os.getpid(), num, time.time()))
                    with open(name + ".tmp", "w") as fp:
                        fp.write(f.get("from", "") + "\n")
                        for r in f.get("rcpts", []):
                            fp.write(r + "\n")
                        fp.write("TLS: %s\n\n" % tls)
                        fp.write("\n".join(data) + "\n")
                    if a.raw:
                        with open(name + ".raw", "wb") as fp:
                            fp.write(raw)
                    os.rename(name + ".tmp", name)
                if mode == "hostiledot":
                    out(HOSTILE_DOT)
                else:
                    out("250 2.0.0 Ok: stored\r\n")
            elif verb == "RSET" or verb == "NOOP":
                out("250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                out("221 2.0.0 Bye\r\n")
                break
            else:
                out("502 5.5.2 unknown\r\n")
    except (EOFError, OSError, ssl.SSLError):
        pass
    finally:
        try:
            f["s"].close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("case")
    c.add_argument("n", type=int, nargs="?", default=0)
    c.add_argument("--sender", default="sender@example.org")
    c.add_argument("--rcpt", default="rcpt@example.net")
    c.add_argument("--mode", default="")
    s = sub.add_parser("serve")
    s.add_argument("host")
    s.add_argument("port", type=int)
    s.add_argument("--mode", default="normal")
    s.add_argument("--auth", action="store_true")
    s.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    s.add_argument("--dir")
    s.add_argument("--raw", action="store_true")
    a = ap.parse_args()
    if a.what == "serve":
        serve(a)
        return
    cases = {
        "smuggle": case_smuggle, "dotstuff": case_dotstuff,
        "pipeline": case_pipeline, "longcmd": case_longcmd,
        "longline": case_longline, "rcpts": case_rcpts, "size": case_size,
        "errors": case_errors, "idle": case_idle, "trickle": case_trickle,
        "noread": case_noread,
        "slowdata": case_slowdata, "starttls": case_starttls,
        "auth": case_auth, "tlsauth": lambda x: case_auth(x, tls=True),
        "expect-fail": case_expect_fail, "tlssend": case_tlssend,
        "authclear": case_authclear,
    }
    if a.case not in cases:
        die("unknown case " + a.case)
    try:
        cases[a.case](a)
    except (EOFError, ConnectionError, ValueError, socket.timeout) as e:
        die("%s: %s" % (a.case, e))


if __name__ == "__main__":
    main()
