#!/usr/bin/env python3
"""mkseeds.py - (re)write the seed corpora of test/fuzz/corpus/ (all but
dns/, which its own engineer keeps).  Each seed is a small valid or nearly
valid input in the layout its target reads (see the target's header
comment); the fuzzers mutate from there.  Run from anywhere."""
import os, struct, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
C = os.path.join(HERE, "corpus")
ID = "0005f0e1d2c3b4a5"


def put(target, name, data):
    d = os.path.join(C, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fnv(b):
    h = 0xcbf29ce484222325
    for c in b:
        h ^= c
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return h


# smtp: a chunk octet, then a client's stream
SESSION = ("EHLO client.example.org\r\n"
           "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x+2By\r\n"
           "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.com\r\n"
           "RCPT TO:<\"q u\"@[192.0.2.10]>\r\nRCPT TO:<c@[IPv6:2001:db8::1]>\r\n"
           "DATA\r\nSubject: x\r\n\r\nbody\r\n..dot\r\n.\r\nRSET\r\n"
           "MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<\u00e9l\u00e8ve@example.com>\r\n"
           "NOOP\r\nQUIT\r\n")
put("smtp", "session", b"\x10" + SESSION.encode())
put("smtp", "pipelined", b"\x60" + SESSION.encode())
put("smtp", "smuggle-lf", b"\x01" + b"MAIL FROM:<a@example.org>\r\nDATA\r\n"
    b"x\n.\nMAIL FROM:<evil@example.org>\r\n\r\n.\r\n")
put("smtp", "long-line", b"\x05" + b"NOOP " + b"x" * 600 + b"\r\nQUIT\r\n")

# data: chunk, line limit selector, content after the 354
put("data", "plain", b"\x07\x00Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\n")
put("data", "bare-lf", b"\x02\x00a\n.\nb\r\n.\n\r\n.\r\n")
put("data", "bare-cr", b"\x03\x00a\r.\r\nb\r\r\n.\r\n")
put("data", "long", b"\x09\x02" + b"y" * 40 + b"\r\n.\r\n")
put("data", "first", b"\x00\x00.\r\n")
put("data", "nul", b"\x04\x01a\x00b\r\n.x\r\n.\r\n")

# reply: chunk, then server replies
put("reply", "ehlo", b"\x07220 gw.example.com ESMTP\r\n250-gw.example.com\r\n"
    b"250-PIPELINING\r\n250-SIZE 10240000\r\n250-DSN\r\n250 8BITMIME\r\n")
put("reply", "codes", b"\x01354 go\r\n250 2.0.0 Ok: queued\r\n550-5.1.1 no\r\n550 5.1.1 user\r\n")
put("reply", "bad", b"\x10250-a\r\n251 b\r\n")
put("reply", "bare", b"\x02250\r\n250 \r\n421\n")

# path: flags (bit 0 RCPT, bit 1 SMTPUTF8), the argument
put("path", "from", b"\x00FROM:<a.b@example.org> SIZE=100 BODY=8BITMIME RET=FULL ENVID=QQ+2B1")
put("path", "null", b"\x00FROM:<> AUTH=<>")
put("path", "rcpt", b"\x01TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bx+40example.com")
put("path", "quoted", b"\x01TO:<\"a b\\\"c\"@example.com>")
put("path", "literal", b"\x01TO:<x@[192.0.2.1]> ORCPT=rfc822;x")
put("path", "literal6", b"\x01TO:<x@[IPv6:2001:db8::25]>")
put("path", "route", b"\x01TO:<@relay.example.net,@b.example.net:x@example.com>")
put("path", "utf8", "\x03TO:<\u00e9l\u00e8ve@\u00e9cole.example>".encode())
put("path", "utf8-from", "\x00FROM:<\u00e9@example.org> SMTPUTF8".encode())

# config: the shipped examples and a few statements
ex = os.path.join(HERE, "..", "..", "policy", "examples")
for f in sorted(os.listdir(ex)):
    if f.endswith(".conf"):
        put("config", f, open(os.path.join(ex, f), "rb").read())
put("config", "domains", 'hostname gw.example.com\nlisten incoming port 25\n'
    'listen outgoing port 587\ndomain "example.com" {\n server 192.0.2.10 port 25\n'
    ' fallback [2001:db8::10] port 2525\n tls none\n verify-recipients yes\n}\n'
    'domain "example.net" { server mx.example.net }\n'
    'relay-host 192.0.2.30 port 587 tls starttls auth "relay.secret"\n'
    'queue {\n retry-min 5m\n retry-max 1h\n lifetime 5d\n warn 4h\n}\n'
    'limits {\n recipients 100\n}\n')
put("config", "broken", 'domain "example.com" {\n server 192.0.2.10\n'
    'port "p0" {\n incoming proxy\n}\n')


# spool: flags, 2 octets of the message file's length, message, state
def env_file(nrcpt, body=b"Subject: hi\r\n\r\nbody\r\n", warned=0):
    hdr = ("MXBQ 1\nmsg id=%s arrival=1700000000 session=7 client=192.0.2.101 "
           "origdst=192.0.2.10 dir=in helo=client.example.org from=a@example.org "
           "envid=x+2By ret=hdrs size=0 body8=0 smtputf8=0 "
           "received=Received:%%20from%%20x%%0d%%0a bodylen=%d bodysum=%016x warned=%d\n"
           % (ID, len(body), fnv(body), warned))
    for i in range(nrcpt):
        hdr += ("rcpt addr=r%d@example.com orcpt=rfc822;r%d@example.com notify=6 route=mx "
                "state=pending attempts=1 next=1700000300 last=1700000000 status=4.4.1 "
                "remote=mx.example.com[192.0.2.20] diag=421%%20busy notified=0 relayed=0\n"
                % (i, i))
    hdr = hdr.encode()
    return hdr + b"end sum=%016x\n" % fnv(hdr) + body


def st_file(nrcpt):
    s = "MXBS 1\nstate id=%s warned=1 nrcpt=%d\n" % (ID, nrcpt)
    for i in range(nrcpt):
        s += ("rcpt addr=r%d@example.com route=mx state=%s attempts=2 next=0 "
              "last=1700000400 status=5.1.1 diag=550%%20no notified=1 relayed=0\n"
              % (i, "failed" if i else "delivered"))
    s = s.encode()
    return s + b"end sum=%016x\n" % fnv(s)


for n, fl in ((1, 0), (2, 1), (3, 7)):
    m = env_file(n)
    put("spool", "msg%d" % n, bytes([fl]) + struct.pack(">H", len(m)) + m +
        (st_file(n) if fl & 1 else b""))
m = env_file(1)
put("spool", "torn", b"\x00" + struct.pack(">H", len(m) - 9) + m)

# nfq: bit 0 raw packet, else a netlink datagram
def tcp_syn():
    return struct.pack(">HHIIBBHHH", 40000, 25, 1, 0, 0x50, 0x02, 65535, 0, 0)


def ip4(src, dst):
    t = tcp_syn()
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(t), 1, 0, 64, 6, 0,
                       bytes(src), bytes(dst)) + t


def ip6(src, dst, ext=False):
    t = tcp_syn()
    nxt = 0 if ext else 6
    pl = (b"\x06\x00" + b"\x01\x04\x00\x00\x00\x00" if ext else b"") + t
    return struct.pack(">IHBB16s16s", 0x60000000, len(pl), nxt, 64, src, dst) + pl


S4, D4 = [192, 0, 2, 101], [192, 0, 2, 10]
S6 = bytes.fromhex("20010db8000200000000000000000101")
D6 = bytes.fromhex("20010db8000200000000000000000010")
put("nfq", "raw4", b"\x01" + ip4(S4, D4))
put("nfq", "raw6", b"\x01" + ip6(S6, D6))
put("nfq", "raw6-ext", b"\x01" + ip6(S6, D6, True))


def attr(t, payload):
    a = struct.pack("=HH", 4 + len(payload), t) + payload
    return a + b"\x00" * ((4 - len(a) % 4) % 4)


def nfq_msg(pid, pkt, mark):
    # NFQA_PACKET_HDR 1: id(be32) hw_protocol(be16) hook(u8); NFQA_MARK 3; NFQA_PAYLOAD 10
    body = struct.pack("=BBH", 2, 0, struct.unpack("=H", struct.pack(">H", 7))[0])
    body += attr(1, struct.pack(">IHB", pid, 0x0800, 1) + b"\x00")
    body += attr(3, struct.pack(">I", mark))
    body += attr(10, pkt)
    # nlmsg type: NFNL_SUBSYS_QUEUE (3) << 8 | NFQNL_MSG_PACKET (0)
    return struct.pack("=IHHII", 16 + len(body), 3 << 8, 0, 0, 1234) + body


put("nfq", "dgram4", b"\x00" + nfq_msg(1, ip4(S4, D4), 0x0001))
put("nfq", "dgram-two", b"\x00" + nfq_msg(1, ip4(S4, D4), 0) + nfq_msg(2, ip6(S6, D6), 0x00010002))
put("nfq", "dgram-foreign", b"\x02" + nfq_msg(3, ip4(S4, D4), 0))

# control: requests
for n, r in (("stats", "stats\n"), ("list", "queue list\n"), ("show", "queue show %s\n" % ID),
             ("flush", "queue flush\n"), ("delete", "queue\tdelete %s\r\n" % ID),
             ("bounce", "queue bounce 0123\n"), ("unknown", "frobnicate a b c\n"),
             ("empty", "\n"), ("noline", "stats"), ("long", "queue " + "x" * 1100)):
    put("control", n, r)

# dsn: flags (kind, RET, recipients << 4), then sender, ENVID, body, and per
# recipient address, ORCPT, 3 status octets, remote, text
def dsn(flags, sender, envid, body, rcpts):
    out = bytes([flags]) + b"\0".join([sender, envid, body]) + b"\0"
    for a, o, st, rem, diag in rcpts:
        out += a + b"\0" + o + b"\0" + st + rem + b"\0" + diag + b"\0"
    return out


put("dsn", "failure", dsn(0x20, b"a@example.org", b"ENV+2B1",
    b"Subject: hi\r\nFrom: a@example.org\r\n\r\nbody\r\n",
    [(b"b@example.com", b"rfc822;b+2Bx@example.com", b"\x02\x01\x01",
      b"mx.example.com[192.0.2.20]", b"550 5.1.1 <b@example.com>: no such user"),
     (b"c@example.net", b"", b"\x01\x04\x01", b"", b"")]))
put("dsn", "delay", dsn(0x11, b"a@example.org", b"", b"Subject: x\r\n\r\n",
    [(b"d@example.com", b"rfc822;d@example.com", b"\x01\x04\x02",
      b"[192.0.2.30]", b"421 4.4.2 timeout")]))
put("dsn", "success-full", dsn(0x16, b"\xc3\xa9@example.org", b"x", b"a\nb\rc\r\n" + b"z" * 1200,
    [(b"e@example.com", b"utf-8;e\\x{E9}@example.com", b"\x00\x00\x00", b"", b"250 ok")]))

# issue 18's forged DSN fields: these abort until ORCPT/ENVID are checked
# at the door (or encoded when written); kept as regression seeds
put("dsn", "orcpt-crlf", dsn(0x10, b"a@example.org", b"", b"Subject: x\r\n\r\n",
    [(b"x@example.com", b"rfc822;x+0D+0AAction:+20delivered+0D+0AStatus:+202.0.0",
      b"\x02\x01\x01", b"", b"550 no")]))
put("dsn", "orcpt-lf", dsn(0x11, b"a@example.org", b"", b"Subject: x\r\n\r\n",
    [(b"d@example.com", b"rfc822;d@examp+0Acom", b"\x01\x04\x02", b"", b"")]))
put("path", "orcpt-crlf", b"\x01TO:<x@example.com> ORCPT=rfc822;x+0D+0AAction:+20delivered")
put("path", "envid-nul", b"\x00FROM:<a@example.org> ENVID=x+00y")
