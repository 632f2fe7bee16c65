#!/usr/bin/python3
"""dkimverify.py FILE SELECTOR DOMAIN TXTFILE

Verify the DKIM signature of d=DOMAIN, s=SELECTOR in the message FILE (as
stored: a Maildir file, an smtp-sink dump; LF or CRLF line ends) with the
public key whose TXT record value ("v=DKIM1; k=rsa; p=...") is in TXTFILE.
No DNS: the key lookup is answered from TXTFILE, any other name fails.
Exit 0 when a DKIM-Signature with that d= and s= verifies, 1 when none does
(the reason on stderr), 2 on a usage or read error.  Needs python3-dkim
(run it with /usr/bin/python3, not a python without that module).
"""
import logging
import re
import sys

try:
    import dkim
except ImportError:
    print("dkimverify: no module dkim (python3-dkim)", file=sys.stderr)
    sys.exit(2)


def main():
    if len(sys.argv) != 5:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    path, sel, domain, txtfile = sys.argv[1:]
    try:
        msg = open(path, "rb").read()
        txt = open(txtfile, "rb").read().strip()
    except OSError as e:
        print("dkimverify: %s" % e, file=sys.stderr)
        return 2
    # a stored message has LF line ends; DKIM is computed on CRLF
    msg = re.sub(rb"\r?\n", b"\r\n", msg)
    want = ("%s._domainkey.%s." % (sel, domain)).lower().encode()
    asked = []

    def dnsfunc(name, timeout=5):
        if isinstance(name, str):
            name = name.encode()
        asked.append(name.decode(errors="replace"))
        if name.lower().rstrip(b".") + b"." == want:
            return txt
        return None

    # dkimpy says why a signature fails only in its log
    log = logging.getLogger("dkimverify")
    log.propagate = False
    reasons = []

    class Keep(logging.Handler):
        def emit(self, record):
            reasons.append(record.getMessage())
    log.addHandler(Keep())
    log.setLevel(logging.DEBUG)
    d = dkim.DKIM(msg, logger=log)
    sigs = [i for i, (k, _) in enumerate(d.headers)
            if k.lower() == b"dkim-signature"]
    if not sigs:
        print("dkimverify: %s: no DKIM-Signature header" % path,
              file=sys.stderr)
        return 1
    why = []
    for idx in range(len(sigs)):
        sig = dkim.parse_tag_value(d.headers[sigs[idx]][1])
        if sig.get(b"d", b"").lower() != domain.lower().encode() or \
           sig.get(b"s", b"").lower() != sel.lower().encode():
            why.append("signature %d: d=%s s=%s, not d=%s s=%s" % (
                idx, sig.get(b"d", b"").decode(), sig.get(b"s", b"").decode(),
                domain, sel))
            continue
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            why.append("signature %d: %s" % (idx, e))
            continue
        if ok:
            print("dkimverify: %s: valid signature d=%s s=%s" % (
                path, domain, sel))
            return 0
        why.append("signature %d (d=%s s=%s) does not verify: %s" % (
            idx, domain, sel, "the signed headers or the key differ"
            if not reasons or reasons[-1].endswith("valid: False")
            else reasons[-1]))
    print("dkimverify: %s: %s" % (path, "; ".join(why)), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
