#!/bin/bash
# t-mta-bigbody: bodies over the MTA's memory share (1 MiB) go to a spill
# file written on the worker's loop through libuv's thread pool, never by
# a write() on the loop.  Through the incoming proxy:
#   1. two 6 MB messages at once (dot lines inside, so stuffing crosses
#      the spill) are queued and reach the server byte for byte;
#   2. a client that sends 4 MB of a body and then drops the connection
#      leaves nothing behind: no queue file, no spill file in tmp/, the
#      daemon up;
#   3. the tmp/ folder is empty at the end (every spill file went into its
#      queue file or was removed).
. "$(dirname "$0")/t-mta-common.inc"

mta_conf "limits { size 20000000; }
domain \"example.com\" {
	server $TB_SRV_IP4 port 25
}"
mta_up
pid=$(tr -dc 0-9 <"$TB_MXB_PIDFILE")

# big_send MODE N SUBJ: python in c1 sends an N-line body (about 100
# bytes a line; every 1000th line starts with a dot); MODE full prints
# "OK sha256" of the body as the server will store it (LF lines), MODE
# drop sends half of it and closes the connection
big_send() {
	tb_exec c1 python3 -c '
import hashlib, smtplib, socket, sys
mode, n, subj, srv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = []
for i in range(n):
    lines.append(("." if i % 1000 == 0 else "") + "line %08d " % i +
                 hashlib.sha256(str(i).encode()).hexdigest()[:80])
body = "\r\n".join(lines) + "\r\n"
hdr = ("From: <sender@example.org>\r\nTo: <alice@example.com>\r\n"
       "Subject: %s\r\nMessage-ID: <%s@test>\r\n\r\n" % (subj, subj))
if mode == "drop":
    s = socket.create_connection((srv, 25), timeout=30)
    f = s.makefile("rb")
    def cmd(c, want):
        if c is not None:
            s.sendall(c.encode() + b"\r\n")
        while True:
            l = f.readline()
            if l[3:4] != b"-":
                break
        if not l.startswith(want):
            print("ERR %r -> %r" % (c, l)); sys.exit(1)
    cmd(None, b"220")
    cmd("EHLO c1.test.example", b"250")
    cmd("MAIL FROM:<sender@example.org>", b"250")
    cmd("RCPT TO:<alice@example.com>", b"250")
    cmd("DATA", b"354")
    stuffed = "".join(("." + l if l.startswith(".") else l) + "\r\n"
                      for l in lines[: n // 2])
    s.sendall((hdr + stuffed).encode())
    s.close()
    print("DROPPED")
    sys.exit(0)
c = smtplib.SMTP(srv, 25, local_hostname="c1.test.example", timeout=120)
refused = c.sendmail("sender@example.org", ["alice@example.com"],
                     (hdr + body).encode())
c.quit()
if refused:
    print("ERR refused %r" % refused); sys.exit(1)
print("OK " + hashlib.sha256(body.replace("\r\n", "\n").encode()).hexdigest())
' "$1" "$2" "$3" "$TB_SRV_IP4"
}

# body_sha SUBJ: sha256 of the body of the stored message with that subject
body_sha() {
	local f
	f=$(grep -rl "^Subject: $1\$" "$TB_MAILDIR/alice/new" "$TB_MAILDIR/alice/cur" 2>/dev/null | head -n 1)
	[ -n "$f" ] || { echo none; return; }
	sed '1,/^$/d' "$f" | sha256sum | cut -d' ' -f1
}

# 1. two 6 MB messages at once
n0=$(maildir_count alice)
big_send full 60000 big-one >"$S/one.out" 2>&1 &
p1=$!
big_send full 60000 big-two >"$S/two.out" 2>&1 &
p2=$!
wait "$p1" || fail "big-one not accepted: $(cat "$S/one.out")"
wait "$p2" || fail "big-two not accepted: $(cat "$S/two.out")"
wait_for -t 60 maildir_count alice -ge $((n0 + 2)) ||
	fail "not delivered: $(grep -E 'msgid=|spool' "$TB_MXB_LOG" | tail -n 5)"
for m in one two; do
	want=$(awk '/^OK /{print $2}' "$S/$m.out")
	got=$(body_sha "big-$m")
	[ -n "$want" ] && [ "$want" = "$got" ] ||
		fail "big-$m: the stored body differs (sent $want, stored $got)"
done
log_has "spool: (open|write) " && fail "spill error: $(grep -E 'spool: (open|write) ' "$TB_MXB_LOG" | head -n 2)"

# 2. a client that drops the connection in the middle of a big body
q0=$(find "$S/spool/queue" -type f 2>/dev/null | wc -l)
big_send drop 40000 big-dropped >"$S/drop.out" 2>&1 || fail "drop client: $(cat "$S/drop.out")"
wait_for -t 20 eval '[ -z "$(ls -A "$S/spool/tmp" 2>/dev/null)" ]' ||
	fail "spill file left in tmp/ after the client dropped: $(ls -l "$S/spool/tmp")"
kill -0 "$pid" 2>/dev/null || fail "the daemon died"
q1=$(find "$S/spool/queue" -type f 2>/dev/null | wc -l)
[ "$q1" -le "$q0" ] || fail "a dropped message was queued ($q0 -> $q1 queue files)"
log_has "client-closed|client-gone|lost" ||
	fail "no log line for the dropped session: $(tail -n 3 "$TB_MXB_LOG")"

# 3. nothing left behind
[ -z "$(ls -A "$S/spool/tmp" 2>/dev/null)" ] || fail "tmp/ not empty: $(ls "$S/spool/tmp")"
mta_down
pass "bodies over 1 MiB: two 6 MB messages at once stored byte for byte, a client dropped mid-body leaves no spill file and no queue file"
