#!/usr/bin/env python3
"""textcheck.py - checks for the hostile-text tests (t-mta-dsn-forge,
t-proxy-hostile-text); run by them, never on its own.

  textcheck.py dsn RAWFILE RCPT[,RCPT...]
    RAWFILE holds a DSN's DATA octets as received.  Only CRLF line ends,
    no line over 998 octets, no ESC; its message/delivery-status part,
    unfolded, is groups of "Name: value" fields: the per-message group,
    then exactly one group per RCPT, in order, each with one
    Final-Recipient and one Action.

  textcheck.py log LOGFILE MATCH KEY=VALUE
    No ESC octet anywhere in LOGFILE; each line holding MATCH parses as
    key=value fields (values quoted with backslash escapes, <...> or
    bare) with every key once, and KEY=VALUE among them.
"""
import re
import sys


def dsn(path, rcpts):
    m = open(path, "rb").read()
    errs = []
    for i, b in enumerate(m):
        if b == 13 and m[i + 1:i + 2] != b"\n":
            errs.append("bare CR at %d" % i)
        if b == 10 and (i == 0 or m[i - 1] != 13):
            errs.append("bare LF at %d" % i)
    if b"\x1b" in m:
        errs.append("ESC in the DSN")
    if any(len(ln) > 998 for ln in m.split(b"\r\n")):
        errs.append("a line over 998 octets")
    t = m.decode("utf-8", "replace")
    head = "Content-Type: message/delivery-status\r\n\r\n"
    i = t.find(head)
    if i < 0:
        return ["no message/delivery-status part"]
    i += len(head)
    j = t.find("\r\n--", i)
    part = re.sub(r"\r\n[ \t]", " ", t[i:j + 2])
    groups = part.rstrip("\r\n").split("\r\n\r\n")
    for g in groups:
        for ln in g.split("\r\n"):
            if not re.match(r"^[A-Za-z][A-Za-z0-9-]*: ", ln):
                errs.append("not a field: %r" % ln)
    finals = []
    for n, g in enumerate(groups[1:]):
        names = [ln.split(":", 1)[0].lower() for ln in g.split("\r\n")]
        if names.count("final-recipient") != 1 or names.count("action") != 1:
            errs.append("group %d: %r" % (n + 1, g))
        finals += [ln[17:] for ln in g.split("\r\n")
                   if ln.startswith("Final-Recipient: ")]
    want = ["rfc822; " + r for r in rcpts]
    if finals != want:
        errs.append("recipients %r, want %r" % (finals, want))
    return errs


FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)=("(?:[^"\\]|\\.)*"|<[^ ]*>|[^ ]*)')


def log(path, match, kv):
    data = open(path, "rb").read()
    errs = []
    if b"\x1b" in data:
        errs.append("ESC in the log: %r" % data[data.index(b"\x1b") - 80:
                                               data.index(b"\x1b") + 40])
    key, val = kv.split("=", 1)
    seen = 0
    for raw in data.split(b"\n"):
        ln = raw.decode("utf-8", "replace")
        if match not in ln:
            continue
        seen += 1
        # a delivery outcome ends with Postfix's "status=WORD (text)": the
        # rest of the line is the server's, never a field of ours
        head, sep, st = ln.partition(" status=")
        if sep and not re.match(r"^[a-z]+ \(.*\)$", st):
            errs.append("status=%r is not WORD (TEXT) in: %s" % (st, ln))
        keys = [m.group(1) for m in FIELD.finditer(head)]
        fields = dict((m.group(1), m.group(2)) for m in FIELD.finditer(head))
        if sep:
            keys.append("status")
            fields["status"] = st.split(" ", 1)[0]
        dup = sorted(set(k for k in keys if keys.count(k) > 1))
        if dup:
            errs.append("fields %s more than once in: %s" % (dup, ln))
        if fields.get(key) != val:
            errs.append("%s=%r, want %r in: %s" % (key, fields.get(key),
                                                   val, ln))
    if not seen:
        errs.append("no line holds %r" % match)
    return errs


def main():
    if sys.argv[1] == "dsn":
        errs = dsn(sys.argv[2], sys.argv[3].split(","))
    else:
        errs = log(sys.argv[2], sys.argv[3], sys.argv[4])
    for e in errs:
        print(e)
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()
