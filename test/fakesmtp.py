#!/usr/bin/env python3
# fakesmtp.py - a scripted SMTP server for the MTA's client tests (relay
# host AUTH, TLS policy).  It offers AUTH PLAIN LOGIN, with STARTTLS in
# mode "tls" (never in mode "plain"), and writes every command it reads
# to LOG with whether TLS was on ("N tls=0|1 C: LINE"; AUTH lines as
# "AUTHWITH user password"; each message as "MSG subject"; a refused
# handshake as "TLSFAIL reason").  "LISTENING" once it accepts.  Mode
# "tls12" is "tls" with nothing newer than TLS 1.2.  Each connection
# starts with "N OPEN active=K": K sessions open at once, this one
# included; a session ends at its 221 (the server is done with it then),
# or when the connection goes.  A message whose subject ends in "-slow"
# gets its 250 after 3 seconds (a delivery connection kept busy).
#
#   fakesmtp.py LOG MODE CERT KEY ADDRESS PORT
import base64
import socket
import ssl
import sys
import threading
import time

log_path, mode, cert, key, addr, port = sys.argv[1:7]
logf = open(log_path, "a", buffering=1)
lock = threading.Lock()
active = 0


def log(s):
    with lock:
        logf.write(s + "\n")


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
if mode != "plain":     # plain: CERT and KEY may be "-"
    ctx.load_cert_chain(cert, key)
if mode == "tls12":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2


def serve(c, n):
    global active
    with lock:
        active += 1
        logf.write("%d OPEN active=%d\n" % (n, active))
    done = [False]
    try:
        session(c, n, done)
    finally:
        if not done[0]:
            end(done)
        c.close()


def end(done):
    global active
    with lock:
        active -= 1
    done[0] = True


def session(c, n, done):
    tls = 0
    f = c.makefile("rb")

    def out(s):
        c.sendall((s + "\r\n").encode())

    out("220 relay.example.org fake ESMTP")
    while True:
        line = f.readline()
        if not line:
            log("%d tls=%d EOF" % (n, tls))
            return
        line = line.decode(errors="replace").rstrip("\r\n")
        verb = line.split(" ")[0].upper()
        log("%d tls=%d C: %s" % (n, tls, line if verb != "AUTH"
                                 else "AUTH " + line.split(" ")[1]))
        if verb in ("EHLO", "HELO"):
            caps = ["relay.example.org"]
            if mode in ("tls", "tls12") and not tls:
                caps.append("STARTTLS")
            caps += ["AUTH PLAIN LOGIN", "8BITMIME"]
            for i, cp in enumerate(caps):
                out("250%s%s" % ("-" if i < len(caps) - 1 else " ", cp))
        elif verb == "STARTTLS":
            out("220 go ahead")
            try:
                c = ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log("%d TLSFAIL %s" % (n, e))
                return
            tls = 1
            f = c.makefile("rb")
        elif verb == "AUTH":
            parts = line.split(" ")
            if parts[1].upper() == "PLAIN":
                cred = base64.b64decode(parts[2]).split(b"\0")
                user, pw = cred[1].decode(), cred[2].decode()
            else:
                out("334 VXNlcm5hbWU6")
                user = base64.b64decode(f.readline().strip()).decode()
                out("334 UGFzc3dvcmQ6")
                pw = base64.b64decode(f.readline().strip()).decode()
            log("%d tls=%d AUTHWITH %s %s" % (n, tls, user, pw))
            out("235 2.7.0 ok")
        elif verb == "DATA":
            out("354 go")
            subj = ""
            while True:
                data = f.readline().decode(errors="replace")
                if data in ("", ".\r\n", ".\n"):
                    break
                if data.startswith("Subject: "):
                    subj = data[9:].strip()
            log("%d tls=%d MSG %s" % (n, tls, subj))
            if subj.endswith("-slow"):
                time.sleep(3)
            out("250 2.0.0 queued")
        elif verb == "QUIT":
            end(done)
            out("221 bye")
            c.close()
            return
        else:
            out("250 ok")


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, int(port)))
s.listen(16)
log("LISTENING")
n = 0
while True:
    conn, _ = s.accept()
    n += 1
    threading.Thread(target=serve, args=(conn, n), daemon=True).start()
