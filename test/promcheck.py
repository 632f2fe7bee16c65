#!/usr/bin/env python3
"""promcheck.py - the tests' client of the metrics endpoint (t-metrics).

  promcheck.py scrape HOST PORT [FILE]
      GET /metrics; checks the status (200), the Content-Type (text/plain;
      version=0.0.4) and the exposition: every line a comment (# HELP or
      # TYPE, each once per family, before its samples, a known type) or a
      sample matching the text format's grammar, every sample's family
      with HELP and TYPE, the samples of a family together, no series
      twice, counters named _total, a histogram's samples _bucket (with
      le, rising, ending with le="+Inf"), _sum and _count (the +Inf
      bucket's value); prints "SERIES VALUE" per sample, and writes the
      body as it came to FILE when one is named (for promtool).
      Exit 1 with the reason on any fault.
  promcheck.py probe HOST PORT KIND
      one hostile or wrong request, prints what came back: the status code
      of the answer ("404"), "closed" (the server closed without a word),
      "refused" (no listener) or "timeout" (nothing within 15 s).  KIND:
      path, post, garbage, huge (a 64 KiB header), pipelined (two
      requests: prints the codes of every answer, space separated), slow
      (half a request line, then nothing), idle (connects, sends nothing,
      prints what came back and after how many whole seconds), cap
      (holds 16 idle connections, then asks on a 17th: what came back
      on it and after how many seconds), get (a whole GET /metrics, as
      scrape sends it: for a peer "metrics allow" leaves out, "closed").
"""
import re
import socket
import sys
import time

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
VALUE = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]Inf|NaN)"
SAMPLE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*,?)?\})? (%s)(?: -?[0-9]+)?$" %
                    (NAME, LABEL, LABEL, VALUE))
HELP = re.compile(r"^# HELP (%s) (.*)$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)


def die(why):
    print("promcheck: " + why)
    sys.exit(1)


def connect(host, port, tmo=15):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(tmo)
    s.connect((host, port))
    return s


def read_all(s):
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        data += d
    return data


def answers(data):
    """the status codes of every HTTP answer in data"""
    codes = []
    while data:
        m = re.match(rb"HTTP/1\.[01] ([0-9]{3}) [^\r\n]*\r\n", data)
        if not m:
            break
        head, _, rest = data.partition(b"\r\n\r\n")
        cl = re.search(rb"(?im)^content-length: *([0-9]+)\r?$", head)
        n = int(cl.group(1)) if cl else len(rest)
        codes.append(m.group(1).decode())
        data = rest[n:]
    return codes


def scrape(host, port, save=None):
    s = connect(host, port)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nUser-Agent: promcheck\r\n\r\n")
    data = read_all(s)
    s.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        die("no end of the answer's head: %r" % data[:200])
    lines = head.decode("latin-1").split("\r\n")
    if not re.match(r"^HTTP/1\.[01] 200 ", lines[0]):
        die("status: " + lines[0])
    hdr = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdr[k.strip().lower()] = v.strip()
    ctype = hdr.get("content-type", "")
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        die("content-type: " + ctype)
    if hdr.get("connection", "").lower() != "close":
        die("no Connection: close")
    if int(hdr.get("content-length", "-1")) != len(body):
        die("content-length %s, body %d bytes" % (hdr.get("content-length"), len(body)))
    if save:
        with open(save, "wb") as f:
            f.write(body)
    text = body.decode("utf-8")
    if text and not text.endswith("\n"):
        die("the last line has no newline")
    helps, types, seen, series, out, hists = {}, {}, [], set(), [], {}
    cur = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        m = HELP.match(line)
        if m:
            if m.group(1) in helps:
                die("line %d: second HELP of %s" % (n, m.group(1)))
            helps[m.group(1)] = m.group(2)
            continue
        m = TYPE.match(line)
        if m:
            fam = m.group(1)
            if fam in types:
                die("line %d: second TYPE of %s" % (n, fam))
            if fam in seen:
                die("line %d: TYPE of %s after its samples" % (n, fam))
            types[fam] = m.group(2)
            continue
        if line.startswith("#"):
            die("line %d: a comment that is neither HELP nor TYPE: %r" % (n, line))
        m = SAMPLE.match(line)
        if not m:
            die("line %d: not a sample: %r" % (n, line))
        fam = m.group(1)
        if fam not in types:
            base = re.sub(r"_(bucket|sum|count)$", "", fam)
            if types.get(base) == "histogram":
                hists.setdefault(base, []).append((fam[len(base):], m.group(2) or "", m.group(3)))
                fam = base
        if fam not in helps or fam not in types:
            die("line %d: %s has no HELP or TYPE before it" % (n, fam))
        if types[fam] == "counter" and not fam.endswith("_total"):
            die("line %d: counter %s not named _total" % (n, fam))
        if fam != cur:
            if fam in seen:
                die("line %d: the samples of %s are not together" % (n, fam))
            seen.append(fam)
            cur = fam
        key = m.group(1) + (m.group(2) or "")
        if key in series:
            die("line %d: series %s twice" % (n, key))
        series.add(key)
        out.append("%s %s" % (key, m.group(3)))
    for fam in set(helps) | set(types):
        if fam not in seen:
            die("%s has HELP or TYPE but no sample" % fam)
    for fam, samples in hists.items():
        check_histogram(fam, samples)
    print("\n".join(out))


def check_histogram(fam, samples):
    """one unlabelled histogram: buckets rising in le and value, the last
    le="+Inf", and _count equal to it"""
    last_le, last_v, count, inf = -1.0, -1.0, None, None
    for suffix, labels, value in samples:
        v = float(value)
        if suffix == "_bucket":
            m = re.search(r'le="([^"]*)"', labels)
            if not m:
                die("%s_bucket%s without le" % (fam, labels))
            le = float(m.group(1))
            if le <= last_le or v < last_v:
                die("%s: bucket le=%s (%s) after le=%s (%s)" %
                    (fam, m.group(1), value, last_le, last_v))
            last_le, last_v = le, v
            if m.group(1) == "+Inf":
                inf = v
        elif suffix == "_count":
            count = v
        elif suffix != "_sum":
            die("%s: a sample %s%s" % (fam, fam, suffix))
    if inf is None:
        die('%s: no le="+Inf" bucket' % fam)
    if count != inf:
        die("%s: _count %s, +Inf bucket %s" % (fam, count, inf))


def probe(host, port, kind):
    try:
        s = connect(host, port)
    except ConnectionRefusedError:
        print("refused")
        return
    t0 = time.monotonic()
    try:
        if kind == "get":
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "path":
            s.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        elif kind == "post":
            s.sendall(b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")
        elif kind == "garbage":
            s.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 garbage\r\n")
        elif kind == "huge":
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "pipelined":
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n"
                      b"GET /x HTTP/1.1\r\n\r\n")
        elif kind == "slow":
            s.sendall(b"GET /metr")
        elif kind == "idle":
            pass
        elif kind == "cap":
            held = [s] + [connect(host, port) for _ in range(15)]
            time.sleep(0.5)
            s = connect(host, port)
            t0 = time.monotonic()
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        else:
            die("unknown probe " + kind)
        data = read_all(s)
    except socket.timeout:
        print("timeout")
        return
    codes = answers(data)
    what = " ".join(codes) if codes else "closed"
    if kind in ("idle", "slow", "cap"):
        what += " %d" % int(time.monotonic() - t0)
    print(what)


def main():
    if len(sys.argv) in (4, 5) and sys.argv[1] == "scrape":
        scrape(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) == 5 else None)
    elif len(sys.argv) == 5 and sys.argv[1] == "probe":
        probe(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        die("usage: promcheck.py scrape HOST PORT | probe HOST PORT KIND")


if __name__ == "__main__":
    main()
