#!/usr/bin/env python3
"""fakedns.py - a DNS server for the testbed that answers hostile wire
data: one case per domain (CASES below), every other name forwarded to
the testbed's dnsmasq.  UDP and TCP, python3 stdlib only.

  fakedns.py --addr 192.0.2.54 [--port 53] [--forward 192.0.2.53]
  fakedns.py --corpus DIR     seed files for test/fuzz/fuzz_dns.c

A case's answers are built for whatever name they are asked as (DOM is
the case's domain), so the same table writes the fuzz corpus, where the
question is always example.org.
"""
import argparse
import os
import socket
import struct
import sys
import threading

MX_IP = bytes([192, 0, 2, 21])      # the mx21 sink of the testbed
T_A, T_CNAME, T_MX, T_AAAA = 1, 5, 15, 28


def name(n):
    if n in ("", "."):
        return b"\0"
    out = b""
    for label in n.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def hdr(qid, flags, an, qname, qtype):
    return (struct.pack(">HHHHHH", qid, flags, 1, an, 0, 0) +
            name(qname) + struct.pack(">HH", qtype, 1))


def rr(owner, rtype, rdata, ttl=3600, raw_owner=None):
    o = raw_owner if raw_owner is not None else name(owner)
    return o + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def mx(owner, pref, host, raw_owner=None):
    return rr(owner, T_MX, struct.pack(">H", pref) + name(host),
              raw_owner=raw_owner)


def cname(owner, target):
    return rr(owner, T_CNAME, name(target))


OK = 0x8180          # QR RD RA, NOERROR


def answer(dom, case, q, qtype, qid, tcp=False):
    """the wire answer of CASE (domain DOM) to question (q, qtype);
    None: stay silent"""
    mxh = "mx." + dom
    if case == "slow":
        return None
    if qtype == T_MX and q == dom:
        if case == "nullmx":
            return hdr(qid, OK, 1, q, qtype) + mx(q, 0, ".")
        if case == "ipmx":
            return (hdr(qid, OK, 2, q, qtype) + mx(q, 10, "192.0.2.21") +
                    mx(q, 20, "[192.0.2.21]"))
        if case == "loop":
            return (hdr(qid, OK, 2, q, qtype) + cname(q, "loop2." + dom) +
                    cname("loop2." + dom, q))
        if case == "chain":
            return (hdr(qid, OK, 2, q, qtype) + cname(q, "target." + dom) +
                    mx("target." + dom, 10, mxh))
        if case == "other":
            return hdr(qid, OK, 1, q, qtype) + mx("evil.example", 10, mxh)
        if case == "badid":
            return hdr(qid ^ 1, OK, 1, q, qtype) + mx(q, 10, mxh)
        if case == "noqr":
            return hdr(qid, OK & 0x7fff, 1, q, qtype) + mx(q, 10, mxh)
        if case == "tc" and not tcp:
            return hdr(qid, OK | 0x0200, 0, q, qtype)
        if case == "short":
            return (hdr(qid, OK, 1, q, qtype) + mx(q, 10, mxh))[:-5]
        if case == "many":
            # 1500 exchangers, owner compressed to the question
            body = b"".join(mx(q, 10 + i % 50, "m%d.%s" % (i, dom),
                               raw_owner=b"\xc0\x0c") for i in range(1500))
            return hdr(qid, OK, 1500, q, qtype) + body
        if case == "compress":
            # an owner name that points at itself
            h = hdr(qid, OK, 1, q, qtype)
            off = len(h)
            return h + rr(q, T_MX, struct.pack(">H", 10) + b"\xc0\x0c",
                          raw_owner=bytes([0xc0 | off >> 8, off & 0xff]))
        if case == "nx":
            return hdr(qid, OK | 3, 0, q, qtype)
        if case == "servfail":
            return hdr(qid, OK | 2, 0, q, qtype)
        return hdr(qid, OK, 1, q, qtype) + mx(q, 10, mxh)     # good
    if qtype in (T_A, T_AAAA) and q.endswith(dom):
        if case == "a0":
            if qtype == T_A:
                return hdr(qid, OK, 1, q, qtype) + rr(q, T_A, b"")
            return hdr(qid, OK, 1, q, qtype) + rr(q, T_AAAA, MX_IP)
        if qtype == T_A and q != dom:
            return (hdr(qid, OK, 1, q, qtype) +
                    rr(q, T_A, MX_IP, ttl=0xffffffff))
        if qtype == T_A and case == "other":
            return hdr(qid, OK, 1, q, qtype) + rr("evil.example", T_A,
                                                   MX_IP)
    return hdr(qid, OK, 0, q, qtype)                           # NODATA


# domain -> case; slow1.test .. slow9.test never answer
CASES = {c + ".test": c for c in (
    "good", "a0", "nullmx", "ipmx", "loop", "chain", "other", "badid",
    "noqr", "tc", "short", "many", "compress", "nx", "servfail")}
for _i in range(1, 10):
    CASES["slow%d.test" % _i] = "slow"


def case_of(q):
    q = q.lower().rstrip(".")
    for dom, case in CASES.items():
        if q == dom or q.endswith("." + dom):
            return dom, case
    return None, None


def question(pkt):
    """(id, name, type) of a query, or None"""
    if len(pkt) < 12:
        return None
    off, labels = 12, []
    while off < len(pkt) and pkt[off] != 0:
        n = pkt[off]
        if n > 63:
            return None
        labels.append(pkt[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    if off + 5 > len(pkt):
        return None
    qtype = struct.unpack(">H", pkt[off + 1:off + 3])[0]
    return struct.unpack(">H", pkt[:2])[0], ".".join(labels), qtype


def forward(pkt, server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(pkt, (server, 53))
        return s.recv(65535)
    except OSError:
        return None
    finally:
        s.close()


def reply(pkt, fwd, tcp):
    q = question(pkt)
    if q is None:
        return None
    qid, qname, qtype = q
    dom, case = case_of(qname)
    if case is None:
        if qname.lower().endswith(".test") or qname.lower() == "test":
            return hdr(qid, OK | 3, 0, qname, qtype)            # NXDOMAIN
        return forward(pkt, fwd)
    return answer(dom, case, qname.lower(), qtype, qid, tcp)


def serve_udp(sock, fwd):
    while True:
        pkt, peer = sock.recvfrom(65535)
        r = reply(pkt, fwd, False)
        if r is not None:
            sock.sendto(r, peer)


def serve_tcp_conn(c, fwd):
    try:
        c.settimeout(30)
        data = b""
        while True:
            while len(data) < 2 or len(data) < 2 + struct.unpack(
                    ">H", data[:2])[0]:
                chunk = c.recv(65535)
                if not chunk:
                    return
                data += chunk
            n = struct.unpack(">H", data[:2])[0]
            pkt, data = data[2:2 + n], data[2 + n:]
            r = reply(pkt, fwd, True)
            if r is None:
                continue
            c.sendall(struct.pack(">H", len(r)) + r)
    except OSError:
        pass
    finally:
        c.close()


def serve_tcp(sock, fwd):
    while True:
        c, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(c, fwd),
                         daemon=True).start()


def corpus(d):
    """seed files for fuzz_dns.c: modes 0-2 (one answer, MX/A/AAAA of
    example.org), mode 3 (the answers of a whole resolution)"""
    os.makedirs(d, exist_ok=True)
    q, mxh = "example.org", "mx.example.org"
    for case in sorted(set(CASES.values())):
        if case == "slow":
            continue
        for mode, qtype in ((0, T_MX), (1, T_A), (2, T_AAAA)):
            for tcp in (False, True):
                a = answer(q, case, q, qtype, 0x4d58, tcp)
                if a is None or (tcp and case != "tc"):
                    continue
                fn = "%s-%s%s" % (case, ("mx", "a", "aaaa")[mode],
                                  "-tcp" if tcp else "")
                with open(os.path.join(d, fn), "wb") as f:
                    f.write(bytes([mode]) + a)
        seq = [answer(q, case, q, T_MX, 0, False)]
        if case == "tc":
            seq.append(answer(q, case, q, T_MX, 0, True))
        seq += [answer(q, case, mxh, T_A, 0), answer(q, case, mxh, T_AAAA, 0)]
        seq += [answer(q, case, q, T_A, 0), answer(q, case, q, T_AAAA, 0)]
        blob = bytes([3]) + b"".join(struct.pack(">H", len(a)) + a
                                     for a in seq if a is not None)
        if len(blob) < 60000:
            with open(os.path.join(d, case + "-resolve"), "wb") as f:
                f.write(blob)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="192.0.2.54")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--forward", default="192.0.2.53")
    ap.add_argument("--corpus")
    a = ap.parse_args()
    if a.corpus:
        corpus(a.corpus)
        return 0
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((a.addr, a.port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((a.addr, a.port))
    t.listen(64)
    threading.Thread(target=serve_tcp, args=(t, a.forward),
                     daemon=True).start()
    print("fakedns: listening on %s:%d" % (a.addr, a.port), flush=True)
    serve_udp(u, a.forward)
    return 0


if __name__ == "__main__":
    sys.exit(main())
