#!/usr/bin/env python3
# fakemilter.py - a scriptable milter (Sendmail milter protocol 6) for the
# tests: it logs what it is told, one JSON object per line, and answers
# as the mode file says, read afresh for each connection.
#   usage: fakemilter.py LOG ADDR PORT MODEFILE
# Modes (first word of MODEFILE, an argument may follow):
#   accept          continue to everything
#   edit            at the end: add X-Fake-Milter, insert X-Fake-First at
#                   0, change Subject, delete X-Drop-Me; continue
#   lean            asks for no HELO step, no header replies, leading
#                   spaces, then as edit
#   reject-rcpt A   RCPT <A> gets 550 5.7.1 (custom reply)
#   reject-connect  CONNECT gets 'r'
#   replycode-eom   the end gets a two-line 554 reply
#   tempfail-eom    the end gets 't'
#   discard-eom     the end gets 'd'
#   reject-body     the first body chunk gets 'r'
#   quarantine      the end: 'q' with a reason, then continue
#   garbage         answers OPTNEG with garbage
#   oversize        answers OPTNEG with a 2 GB length
#   close-eom       closes the connection at the end
#   slow-eom        never answers the end
#   replbody        the end: replaces the body (two packets, bare LFs)
#   addrcpt A       the end: adds <A> (SMFIR_ADDRCPT_PAR, with arguments)
#   addrcpt-bare A  the end: adds A (SMFIR_ADDRCPT, no brackets)
#   delrcpt A       the end: deletes <A>
#   chgfrom A       the end: the sender becomes <A> (with an argument)
#   delall          the end: deletes every recipient it was told of
#   addrcpt-bad     the end: adds an address with a space in it
#   addrcpt-early   answers RCPT with an added recipient first
#   ungranted       asks for header actions only, replaces the body
#   replbody-big    the end: replaces the body with 30000 bytes
# The modes that edit the body or the envelope ask for every action
# (0xff), the others for header edits and quarantine (0x31).
import json
import socket
import struct
import sys
import threading

LOG, ADDR, PORT, MODEFILE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()


def log(obj):
    with lock, open(LOG, "a") as f:
        f.write(json.dumps(obj) + "\n")


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k:
            raise EOFError
        b += k
    return b


def send(c, cmd, data=b""):
    c.sendall(struct.pack("!I", len(data) + 1) + cmd + data)


def cstrs(data):
    return [x.decode("utf-8", "replace") for x in data.split(b"\0")[:-1]]


def serve(c):
    try:
        mode = open(MODEFILE).read().split()
    except OSError:
        mode = ["accept"]
    word = mode[0] if mode else "accept"
    arg = mode[1] if len(mode) > 1 else ""
    body = 0
    rcpts = []
    envmodes = ("replbody", "replbody-big", "addrcpt", "addrcpt-bare", "delrcpt", "chgfrom",
                "delall", "addrcpt-bad", "addrcpt-early")
    try:
        while True:
            (n,) = struct.unpack("!I", recv_exact(c, 4))
            pkt = recv_exact(c, n)
            cmd, data = pkt[:1], pkt[1:]
            if cmd == b"O":
                ver, act, proto = struct.unpack("!III", data[:12])
                log({"cmd": "O", "version": ver, "actions": act, "proto": proto})
                if word == "garbage":
                    c.sendall(b"\x00\x00\x00\x05Ohello world")
                    continue
                if word == "oversize":
                    c.sendall(b"\x7f\xff\xff\xffO")
                    continue
                myproto = 0
                if word == "lean":
                    myproto = 0x2 | 0x80 | 0x100000  # NOHELO NR_HDR LEADSPC
                want = 0xff if word in envmodes else 0x31
                send(c, b"O", struct.pack("!III", 6, want, myproto))
            elif cmd == b"D":
                log({"cmd": "D", "stage": data[:1].decode(), "macros": cstrs(data[1:])})
            elif cmd == b"C":
                host, rest = data.split(b"\0", 1)
                fam = rest[:1].decode()
                port = struct.unpack("!H", rest[1:3])[0] if fam in "46" else 0
                log({"cmd": "C", "host": host.decode(), "family": fam, "port": port,
                     "addr": rest[3:].rstrip(b"\0").decode()})
                send(c, b"r" if word == "reject-connect" else b"c")
            elif cmd in (b"H", b"M", b"R"):
                args = cstrs(data)
                log({"cmd": cmd.decode(), "args": args})
                if cmd == b"M":
                    rcpts = []
                if cmd == b"R" and args:
                    rcpts.append(args[0])
                if cmd == b"R" and word == "addrcpt-early":
                    send(c, b"+", b"<bob@example.com>\0")
                if cmd == b"R" and word == "reject-rcpt" and args and args[0] == "<%s>" % arg:
                    send(c, b"y", b"550 5.7.1 fake milter: no such user here\0")
                else:
                    send(c, b"c")
            elif cmd == b"T":
                log({"cmd": "T"})
                send(c, b"c")
            elif cmd == b"L":
                name, value = cstrs(data)
                log({"cmd": "L", "name": name, "value": value})
                if word != "lean":
                    send(c, b"c")
            elif cmd == b"N":
                log({"cmd": "N"})
                send(c, b"c")
            elif cmd == b"B":
                body += len(data)
                log({"cmd": "B", "len": len(data), "head": data[:60].decode("utf-8", "replace")})
                send(c, b"r" if word == "reject-body" else b"c")
            elif cmd == b"E":
                log({"cmd": "E", "body": body})
                body = 0
                if word == "close-eom":
                    return
                if word == "slow-eom":
                    continue
                if word in ("edit", "lean"):
                    send(c, b"h", b"X-Fake-Milter\0seen by the fake milter\0")
                    send(c, b"i", struct.pack("!I", 0) + b"X-Fake-First\0first\nsecond line\0")
                    send(c, b"m", struct.pack("!I", 1) + b"Subject\0edited by the milter\0")
                    send(c, b"m", struct.pack("!I", 1) + b"X-Drop-Me\0\0")
                if word == "quarantine":
                    send(c, b"q", b"fake quarantine reason\0")
                if word in ("replbody", "ungranted"):
                    send(c, b"b", b"replaced body line one\nreplaced line two\r")
                    send(c, b"b", b"\nend of the replacement\n")
                if word == "replbody-big":
                    for i in range(3):
                        send(c, b"b", b"y" * 9998 + b"\r\n")
                if word == "addrcpt":
                    send(c, b"2", b"<%s>\0NOTIFY=FAILURE X-IGNORED=1\0" % arg.encode())
                if word == "addrcpt-bare":
                    send(c, b"+", b"%s\0" % arg.encode())
                if word == "delrcpt":
                    send(c, b"-", b"<%s>\0" % arg.encode())
                if word == "chgfrom":
                    send(c, b"e", b"<%s>\0SIZE=100\0" % arg.encode())
                if word == "delall":
                    for r in rcpts:
                        send(c, b"-", r.encode() + b"\0")
                if word == "addrcpt-bad":
                    send(c, b"+", b"<bad address@example.com>\0")
                if word == "replycode-eom":
                    send(c, b"y", b"554-5.7.1 fake milter first line\r\n554 5.7.1 fake milter second line\0")
                elif word == "tempfail-eom":
                    send(c, b"t")
                elif word == "discard-eom":
                    send(c, b"d")
                else:
                    send(c, b"c")
            elif cmd == b"A":
                log({"cmd": "A"})
                body = 0
            elif cmd == b"Q":
                log({"cmd": "Q"})
                return
            else:
                log({"cmd": cmd.decode("latin-1"), "unknown": True})
    except (EOFError, ConnectionError, OSError):
        pass
    finally:
        c.close()


def main():
    s = socket.socket(socket.AF_INET6 if ":" in ADDR else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ADDR, PORT))
    s.listen(64)
    log({"cmd": "LISTENING"})
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


main()
