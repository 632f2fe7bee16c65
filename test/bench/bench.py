#!/usr/bin/env python3
"""Helpers of test/bench.sh (python3 standard library only).

  bench.py cpu PID             CPU seconds (utime+stime+cutime+cstime) of PID
                               and its live descendants
  bench.py rss PID             VmRSS of PID in kB
  bench.py latency HOST PORT COUNT [--size BYTES] [--from A] [--rcpt A]
                               COUNT single-message SMTP transactions one after
                               another; JSON with median / p99 (ms) of
                               connect .. 250 after the final dot
  bench.py idle HOST PORT COUNT --pid PID [--parallel N] [--timeout S]
                               hold COUNT idle SMTP sessions (banner read),
                               then measure the RSS of PID per session and
                               whether a new session gets its banner in 1 s
  bench.py holdsrv HOST PORT    a server holding any number of connections,
                               answering each line with "ok N" (N: the lines
                               that connection sent); until killed
  bench.py passflows HOST PORT COUNT --status FILE [--parallel N]
                               [--timeout S]
                               open COUNT connections to a holdsrv, each
                               answered once; then "held" to FILE, and
                               until FILE.go1 exists they idle; a line on
                               each ("round1" to FILE), idle until FILE.go2
                               exists, a line on each again; JSON with how
                               many answered each round
  bench.py cpus W               the CPUs this process may use, split in two:
                               "PROXY LOAD", the first W and the rest, as
                               taskset -c lists ("-" for an empty one)
  bench.py scrape HOST PORT INTERVAL FILE
                               GET /metrics every INTERVAL seconds until
                               killed, as a Prometheus server would; FILE
                               holds the count of whole 200 answers so far
  bench.py add FILE key=value ...    append one result record (JSON line)
  bench.py report FILE [--json OUT]  print the table, write the JSON file

Values given to "add" are numbers when they look like numbers, JSON when
the key ends in ":json", strings otherwise.
"""
import asyncio
import json
import math
import os
import resource
import socket
import statistics
import sys
import time

# ------------------------------------------------------------------ /proc

HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    # the command name may hold spaces and parentheses: split after the last ")"
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime is field 14
    ppid = int(rest[1])
    ticks = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    return ppid, ticks


def cpu_tree(pid):
    """CPU ticks of pid and its live descendants.  A child's time moves into
    its parent's cutime/cstime when it is reaped, so the sum only grows."""
    children = {}
    ticks = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            pp, t = _stat(int(d))
        except (OSError, ValueError):
            continue
        children.setdefault(pp, []).append(int(d))
        ticks[int(d)] = t
    if pid not in ticks:
        raise SystemExit("no process %d" % pid)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo.extend(children.get(p, []))
    return total / HZ


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nofile(pid):
    """the soft RLIMIT_NOFILE of pid"""
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    v = line.split()[3]
                    return int(v) if v.isdigit() else v
    except OSError:
        pass
    return None


def nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1

# ------------------------------------------------------------------ SMTP


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _reply(f):
    """read one (multi-line) SMTP reply from a socket file; return code"""
    while True:
        line = f.readline(2048)
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or not line[:3].isdigit():
            raise ConnectionError("bad reply %r" % line[:60])
        if line[3:4] != b"-":
            return int(line[:3]), line.rstrip(b"\r\n")


def _expect(f, want):
    code, line = _reply(f)
    if code // 100 != want:
        raise ConnectionError("unexpected reply %s" % line[:80].decode(errors="replace"))


def one_transaction(host, port, sender, rcpt, body, timeout):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        _expect(f, 2)
        s.sendall(b"EHLO c1.bench.example\r\n")
        _expect(f, 2)
        s.sendall(b"MAIL FROM:<%s>\r\n" % sender.encode())
        _expect(f, 2)
        s.sendall(b"RCPT TO:<%s>\r\n" % rcpt.encode())
        _expect(f, 2)
        s.sendall(b"DATA\r\n")
        _expect(f, 3)
        s.sendall(body)
        _expect(f, 2)
        t1 = time.perf_counter()
        s.sendall(b"QUIT\r\n")
        try:
            _reply(f)
        except (OSError, ConnectionError):
            pass
        return t1 - t0
    finally:
        s.close()


def make_body(size, sender, rcpt):
    hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: mxbridge bench latency\r\n"
           "Message-ID: <%d.%d@c1.bench.example>\r\n\r\n"
           % (sender, rcpt, os.getpid(), int(time.time() * 1e6)))
    line = b"x" * 76 + b"\r\n"
    n = max(1, size // len(line))
    return hdr.encode() + line * n + b".\r\n"


def pct(sorted_vals, p):
    """nearest-rank percentile"""
    if not sorted_vals:
        return None
    k = max(1, int(math.ceil(p / 100.0 * len(sorted_vals))))
    return sorted_vals[k - 1]


def cmd_latency(args):
    host, port, count = args[0], int(args[1]), int(args[2])
    opts = _opts(args[3:], {"--size": "10240", "--from": "bench@c1.bench.example",
                            "--rcpt": "bench@example.net", "--timeout": "10",
                            "--warmup": "3"})
    body = make_body(int(opts["--size"]), opts["--from"], opts["--rcpt"])
    tmo = float(opts["--timeout"])
    errors, lat = [], []
    for i in range(int(opts["--warmup"]) + count):
        try:
            t = one_transaction(host, port, opts["--from"], opts["--rcpt"], body, tmo)
        except (OSError, ConnectionError) as e:
            errors.append(str(e) or type(e).__name__)
            if len(errors) >= 5:
                break           # a broken path: do not wait 10 s per sample
            continue
        if i >= int(opts["--warmup"]):
            lat.append(t * 1000.0)
    lat.sort()
    out = {"count": count, "ok": len(lat), "errors": len(errors),
           "first_error": errors[0] if errors else None,
           "median_ms": round(pct(lat, 50), 3) if lat else None,
           "p99_ms": round(pct(lat, 99), 3) if lat else None,
           "min_ms": round(lat[0], 3) if lat else None,
           "max_ms": round(lat[-1], 3) if lat else None}
    print(json.dumps(out))
    return 0 if lat and not errors else 1


async def _banner(host, port, timeout):
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        while True:
            line = await asyncio.wait_for(r.readline(), timeout)
            if not line:
                raise ConnectionError("closed before the banner")
            if not line.startswith(b"220"):
                raise ConnectionError("banner %r" % line[:60])
            if line[3:4] != b"-":
                return r, w
    except BaseException:
        w.close()
        raise


async def _idle(host, port, count, pid, parallel, timeout, hold):
    rss0, fds0 = rss_kb(pid), nfds(pid)
    sem = asyncio.Semaphore(parallel)
    errors = []

    async def one():
        async with sem:
            try:
                return await _banner(host, port, timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                errors.append(str(e) or type(e).__name__)
                return None

    t0 = time.perf_counter()
    conns = [c for c in await asyncio.gather(*(one() for _ in range(count))) if c]
    t_open = time.perf_counter() - t0
    await asyncio.sleep(hold)
    rss1, fds1 = rss_kb(pid), nfds(pid)
    # one more session while all the others are held
    t1 = time.perf_counter()
    probe_err = None
    try:
        r, w = await _banner(host, port, 5.0)
        probe = time.perf_counter() - t1
        w.write(b"EHLO probe.bench.example\r\n")
        await w.drain()
        w.close()
    except (OSError, ConnectionError, asyncio.TimeoutError) as e:
        probe, probe_err = None, str(e) or type(e).__name__
    await asyncio.sleep(0.2)
    alive = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    for r, w in conns:
        w.close()
    held = len(conns)
    return {"sessions": count, "held": held, "alive_after_probe": alive,
            "errors": len(errors), "first_error": errors[0] if errors else None,
            "open_s": round(t_open, 3),
            "rss_before_kb": rss0, "rss_held_kb": rss1,
            "rss_per_session_bytes": round((rss1 - rss0) * 1024.0 / held, 1) if held else None,
            "fds_before": fds0, "fds_held": fds1,
            "probe_banner_s": round(probe, 4) if probe is not None else None,
            "probe_error": probe_err,
            "probe_within_1s": probe is not None and probe <= 1.0}


def cmd_idle(args):
    host, port, count = args[0], int(args[1]), int(args[2])
    opts = _opts(args[3:], {"--pid": None, "--parallel": "200", "--timeout": "20",
                            "--hold": "1"})
    if not opts["--pid"]:
        raise SystemExit("idle: --pid PID needed")
    limit = _raise_nofile()
    if limit < count + 64:
        print(json.dumps({"error": "RLIMIT_NOFILE %d too small for %d sessions" % (limit, count)}))
        return 1
    out = asyncio.run(_idle(host, port, count, int(opts["--pid"]), int(opts["--parallel"]),
                            float(opts["--timeout"]), float(opts["--hold"])))
    out["client_nofile"] = limit
    out["daemon_nofile"] = nofile(int(opts["--pid"]))
    print(json.dumps(out))
    return 0 if out["held"] == count and out["probe_within_1s"] else 1



# ------------------------------------------------------------------ passflows


def cmd_holdsrv(args):
    host, port = args[0], int(args[1])
    _raise_nofile()

    async def serve(r, w):
        n = 0
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                n += 1
                w.write(b"ok %d\n" % n)
                await w.drain()
        except (OSError, ConnectionError):
            pass
        w.close()

    async def main_srv():
        srv = await asyncio.start_server(serve, host, port, backlog=4096,
                                         reuse_address=True)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main_srv())
    return 0


async def _await_file(path, timeout):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError("no %s within %d s" % (path, timeout))
        await asyncio.sleep(0.05)


async def _passflows(host, port, count, status, parallel, timeout):
    sem = asyncio.Semaphore(parallel)
    errors = []

    def err(e):
        errors.append(str(e) or type(e).__name__)

    async def ask(c, want):
        r, w = c
        w.write(b"x\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), timeout)
        if line != b"ok %d\n" % want:
            raise ConnectionError("answer %r, not ok %d" % (line[:40], want))

    async def one():
        async with sem:
            try:
                c = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except (OSError, asyncio.TimeoutError) as e:
                err(e)
                return None
            try:
                await ask(c, 1)
                return c
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                err(e)
                c[1].close()
                return None

    async def round_(conns, want):
        async def go(c):
            async with sem:
                try:
                    await ask(c, want)
                    return 1
                except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                    err(e)
                    return 0
        t = time.perf_counter()
        ok = sum(await asyncio.gather(*(go(c) for c in conns)))
        return ok, round(time.perf_counter() - t, 3)

    def mark(word):
        with open(status, "a") as f:
            f.write(word + "\n")

    t0 = time.perf_counter()
    conns = [c for c in await asyncio.gather(*(one() for _ in range(count))) if c]
    t_open = round(time.perf_counter() - t0, 3)
    out = {"flows": count, "held": len(conns), "open_s": t_open}
    try:
        mark("held")
        await _await_file(status + ".go1", 600)
        out["round1_ok"], out["round1_s"] = await round_(conns, 2)
        mark("round1")
        await _await_file(status + ".go2", 600)
        out["round2_ok"], out["round2_s"] = await round_(conns, 3)
    except TimeoutError as e:
        err(e)
    for r, w in conns:
        w.close()
    out["errors"] = len(errors)
    out["first_error"] = errors[0] if errors else None
    return out


def cmd_passflows(args):
    host, port, count = args[0], int(args[1]), int(args[2])
    opts = _opts(args[3:], {"--status": None, "--parallel": "200", "--timeout": "20"})
    if not opts["--status"]:
        raise SystemExit("passflows: --status FILE needed")
    limit = _raise_nofile()
    if limit < count + 64:
        print(json.dumps({"error": "RLIMIT_NOFILE %d too small for %d flows" % (limit, count)}))
        return 1
    out = asyncio.run(_passflows(host, port, count, opts["--status"],
                                 int(opts["--parallel"]), float(opts["--timeout"])))
    print(json.dumps(out))
    return 0 if (out["held"] == count and out.get("round1_ok") == count and
                 out.get("round2_ok") == count) else 1


def _opts(args, defaults):
    o = dict(defaults)
    i = 0
    while i < len(args):
        if args[i] not in o or i + 1 >= len(args):
            raise SystemExit("unknown or incomplete option %s" % args[i])
        o[args[i]] = args[i + 1]
        i += 2
    return o

# ------------------------------------------------------------------ CPUs


def cpu_list(cpus):
    """[0, 1, 2, 5] -> "0-2,5" (taskset -c syntax)"""
    out, cpus = [], sorted(cpus)
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out) or "-"


def cmd_cpus(args):
    w = int(args[0])
    cpus = sorted(os.sched_getaffinity(0))
    print(cpu_list(cpus[:w]), cpu_list(cpus[w:]))
    return 0

# ------------------------------------------------------------------ results


def _value(k, v):
    if k.endswith(":json"):
        return k[:-5], json.loads(v)
    try:
        return k, int(v)
    except ValueError:
        pass
    try:
        f = float(v)
        if math.isfinite(f):
            return k, f
    except ValueError:
        pass
    return k, v


def cmd_add(args):
    rec = {}
    for a in args[1:]:
        k, _, v = a.partition("=")
        if v == "":
            continue            # unknown or not applicable: no key
        k, v = _value(k, v)
        rec[k] = v
    with open(args[0], "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


def _fmt(v, nd=0):
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return ("%.*f" % (nd, v))
    return str(v)


def _worker_list(r):
    """worker_accepted as added ("994 1006", or 2000 for one worker) -> a
    list of ints"""
    v = r.get("worker_accepted")
    if isinstance(v, int):
        r["worker_accepted"] = [v]
    elif isinstance(v, str):
        r["worker_accepted"] = [int(x) for x in v.split()]


def best_of(rs):
    """one row from the runs of a row: n/a if any run failed, otherwise the
    run with the best delivered/s (queued paths) or msg/s, with the rates
    of every run beside it"""
    failed = [r for r in rs if r.get("status") != "ok"]
    if failed:
        row = dict(failed[0])
        if len(rs) > 1 or row.get("round", 1) != 1:
            row["reason"] = "round %s: %s" % (row.get("round"), row.get("reason"))
    else:
        key = "delivered_s" if "delivered_s" in rs[0] else "msg_s"
        row = dict(max(rs, key=lambda r: r.get(key, 0)))
        row["runs_msg_s"] = [r.get("msg_s") for r in rs]
        if key == "delivered_s":
            row["runs_delivered_s"] = [r.get("delivered_s") for r in rs]
        row["rounds"] = len(rs)
        if any("load1" in r for r in rs):
            row["runs_load1"] = [r.get("load1") for r in rs]
    row.pop("round", None)
    return row


def _per_msg(r, key="cpu_s"):
    """CPU ms per message of a measured row (key: the proxy's cpu_s, or
    milter_cpu_s for the milter's)"""
    cpu = r.get(key)
    if r.get("status") != "ok" or not isinstance(cpu, (int, float)) or not r.get("messages"):
        return None
    return round(cpu * 1000.0 / r["messages"], 4)


def _ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return round(a / b, 3)
    return None


def scale_report(sruns, byid, meta, p):
    """the scaling table: HAProxy nbthread W, live relay and incoming proxy
    with workers W; ratios at equal W (best runs, and run by run within a
    round); returns its JSON part (None when no scaling row ran)"""
    if not sruns:
        return None
    rows = []
    for rs in sruns.values():
        r = best_of(rs)
        r["cpu_ms_per_msg"] = _per_msg(r)
        r["runs_cpu_ms_per_msg"] = [_per_msg(x) for x in rs if x.get("status") == "ok"]
        rows.append(r)
    order = {"haproxy": 0, "relay": 1, "incoming": 2}
    rows.sort(key=lambda r: (int(r.get("workers", 0)), order.get(r.get("path"), 9)))
    by = {(r.get("path"), int(r.get("workers", 0))): r for r in rows}
    # the same round's HAProxy run of each relay run
    hap_round = {}
    for rs in sruns.values():
        for x in rs:
            if x.get("path") == "haproxy" and x.get("status") == "ok":
                hap_round[(int(x["workers"]), x.get("round"))] = x
    for r in rows:
        w = int(r.get("workers", 0))
        if r.get("path") == "relay" and r.get("status") == "ok":
            h = by.get(("haproxy", w))
            if h and h.get("status") == "ok":
                r["peer"] = h["id"]
                r["ratio_msg_s"] = _ratio(r.get("msg_s"), h.get("msg_s"))
                r["ratio_cpu_per_msg"] = _ratio(r.get("cpu_ms_per_msg"), h.get("cpu_ms_per_msg"))
            rr = []
            for x in sruns[str(r["id"])]:
                hx = hap_round.get((w, x.get("round")))
                if x.get("status") == "ok" and hx:
                    rr.append(_ratio(x.get("msg_s"), hx.get("msg_s")))
            if rr:
                r["ratio_msg_s_per_round"] = rr
                r["ratio_msg_s_median"] = round(statistics.median(rr), 3)
        if r.get("path") == "incoming" and r.get("status") == "ok":
            pf = byid.get("5")
            if pf and pf.get("status") == "ok":
                r["peer"] = "5"
                r["ratio_msg_s"] = _ratio(r.get("msg_s"), pf.get("msg_s"))
                r["ratio_delivered_s"] = _ratio(r.get("delivered_s"), pf.get("delivered_s"))
    cores = {}
    for r in rows:
        cores.setdefault(int(r.get("workers", 0)), r.get("cores", "?"))

    p("scaling: msg/s and proxy CPU per message at W threads (HAProxy nbthread W,")
    p("mxbridge workers W with mxbridge-netfilter -W W); proxy CPU = utime+stime")
    p("of the proxy process, all threads (/proc)%s"
      % ("; best of %d rounds" % meta["rounds"] if (meta.get("rounds") or 1) > 1 else ""))
    for w in sorted(cores):
        p("  W=%d: %s" % (w, cores[w]))
    p("")
    p("%-2s %-44s %9s %9s %8s %8s  %s" % ("W", "path", "msg/s", "deliv/s", "CPU s", "CPU ms", "vs"))
    p("%-2s %-44s %9s %9s %8s %8s  %s" % ("", "", "(accept)", "", "", "/msg", ""))
    for r in rows:
        w = r.get("workers", "?")
        if r.get("status") != "ok":
            p("%-2s %-44s n/a (%s)" % (w, r["name"], r.get("reason", "?")))
            continue
        vs = ""
        if r.get("path") == "relay":
            if r.get("ratio_msg_s") is not None:
                vs = "relay:HAProxy %.2f msg/s, CPU/msg %.2f" % (
                    r["ratio_msg_s"], r["ratio_cpu_per_msg"] if r.get("ratio_cpu_per_msg") is not None else float("nan"))
                if len(r.get("ratio_msg_s_per_round", [])) > 1:
                    vs += " (rounds: %s; median %.2f)" % (
                        " ".join("%.2f" % x for x in r["ratio_msg_s_per_round"]), r["ratio_msg_s_median"])
            else:
                vs = "relay:HAProxy n/a (HAProxy nbthread %s not measured)" % w
        elif r.get("path") == "incoming":
            if r.get("ratio_msg_s") is not None:
                vs = "vs Postfix (row 5) %.2f, delivered %s" % (
                    r["ratio_msg_s"], _fmt(r.get("ratio_delivered_s"), 2))
            else:
                vs = "vs Postfix: n/a (row 5 not in this run)"
        if r.get("worker_accepted"):
            vs += "%sper worker +%s" % ("; " if vs else "", " +".join(str(x) for x in r["worker_accepted"]))
        p("%-2s %-44s %9s %9s %8s %8s  %s" % (
            w, r["name"], _fmt(r.get("msg_s")), _fmt(r.get("delivered_s")),
            _fmt(r.get("cpu_s"), 2), _fmt(r.get("cpu_ms_per_msg"), 3), vs))
    # workers 1 against row 3 of the same run: one path, one configuration
    w1, r3 = by.get(("relay", 1)), byid.get("3")
    cmp1 = {"relay_workers1_msg_s": w1.get("msg_s") if w1 and w1.get("status") == "ok" else None,
            "row3_msg_s": r3.get("msg_s") if r3 and r3.get("status") == "ok" else None,
            "row3_workers": meta.get("mxbridge_workers")}
    cmp1["ratio"] = _ratio(cmp1["relay_workers1_msg_s"], cmp1["row3_msg_s"])
    p("")
    if cmp1["ratio"] is not None:
        same = meta.get("mxbridge_workers") in (1, None)
        cmp1["note"] = ("the same path and configuration (the live relay, workers 1), run apart in "
                        "time: the ratio shows run-to-run spread, not a second code path; the "
                        "single-loop build no longer exists to compare with" if same else
                        "row 3 ran with workers %s (BENCH_MXB_WORKERS), not 1" % meta.get("mxbridge_workers"))
        p("workers 1 vs row 3 (same run): %s / %s msg/s = %.2f  (%s)" % (
            _fmt(cmp1["relay_workers1_msg_s"]), _fmt(cmp1["row3_msg_s"]), cmp1["ratio"], cmp1["note"]))
    else:
        cmp1["note"] = "not measured: %s" % (
            "row 3 not in this run (BENCH_ROWS)" if not r3 else
            "row 3 n/a" if r3.get("status") != "ok" else "the workers 1 relay row n/a or not run")
        p("workers 1 vs row 3: n/a (%s)" % cmp1["note"][len("not measured: "):])
    p("")
    return {"workers": sorted(cores), "cores": {str(k): v for k, v in cores.items()},
            "rows": rows, "workers1_vs_row3": cmp1}


def milter_report(rows, byid, p):
    """Rows with a milter (milter_cpu_s): the proxy's and the milter's CPU
    per message, each against the peer row's proxy, so the milter's own
    cost stands apart from ours."""
    mrows = [r for r in rows if r.get("status") == "ok" and "milter_cpu_s" in r]
    if not mrows:
        return
    p("with rspamd as milter: CPU ms per message of each process")
    for r in mrows:
        ours, mil = _per_msg(r, "cpu_s"), _per_msg(r, "milter_cpu_s")
        line = "%-2s proxy %s, rspamd %s" % (r["id"], _fmt(ours, 3), _fmt(mil, 3))
        peer = byid.get(str(r.get("peer", "")))
        pp = _per_msg(peer, "cpu_s") if peer else None
        if ours is not None and pp:
            r["ratio_cpu_per_msg"] = round(ours / pp, 3)
            line += "; proxy CPU/msg %s:%s = %.2f (%s ms against %s ms)" % (
                r["id"], r["peer"], ours / pp, _fmt(ours, 3), _fmt(pp, 3))
            if "milter_cpu_s" not in peer:
                line += ", the milter client's cost %+.3f ms" % (ours - pp)
        p(line)
    p("")


def cmd_report(args):
    path = args[0]
    out = args[2] if len(args) > 2 and args[1] == "--json" else None
    meta, rows, extra, runs, sruns = {}, [], {}, {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            kind = r.pop("kind", "row")
            _worker_list(r)
            if kind == "meta":
                meta.update(r)
            elif kind == "row":
                rows.append(r)
            elif kind == "run":
                runs.setdefault(str(r["id"]), []).append(r)
            elif kind == "srun":
                sruns.setdefault(str(r["id"]), []).append(r)
            elif kind == "note":
                meta.setdefault("notes", []).append(r.get("text", ""))
            else:
                extra[kind] = r
    # ratios of runs made in the same round (the mxbridge row right after
    # its peer), before the runs are reduced to their best
    round_ratios = {}
    for rid, rs in runs.items():
        peer = str(rs[0].get("peer", ""))
        if not peer or peer not in runs:
            continue
        prs = {r.get("round"): r for r in runs[peer] if r.get("status") == "ok"}
        for r in rs:
            pr = prs.get(r.get("round"))
            if r.get("status") == "ok" and pr and pr.get("msg_s"):
                round_ratios.setdefault(rid, []).append(round(r["msg_s"] / pr["msg_s"], 3))
    rows.extend(best_of(rs) for rs in runs.values())
    for r in rows:
        if str(r["id"]) in round_ratios and r.get("status") == "ok":
            rr = round_ratios[str(r["id"])]
            r["ratio_msg_s_per_round"] = rr
            r["ratio_msg_s_median"] = round(statistics.median(rr), 3)
    rows.sort(key=lambda r: int(r["id"]))
    byid = {str(r["id"]): r for r in rows}
    # ratios: 3:2, 4:1, 6:5 (mxbridge row over its peer row)
    for r in rows:
        peer = byid.get(str(r.get("peer", "")))
        if not peer:
            continue
        for key in ("msg_s", "delivered_s"):
            a, b = r.get(key), peer.get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
                r["ratio_" + key] = round(a / b, 3)

    p = print
    p("mxbridge bench  %s  nproc=%s  messages=%s  size=%s KB  sessions=%s%s"
      % (meta.get("date"), meta.get("nproc"), meta.get("messages"), meta.get("size_kb"),
         meta.get("sessions"), "  (smoke)" if meta.get("smoke") else ""))
    if (meta.get("rounds") or 1) > 1:
        p("best of %d rounds per row, each mxbridge row run right after its peer"
          % meta["rounds"])
    p("")
    p("%-2s %-46s %9s %9s %9s %8s  %s" % ("#", "path", "msg/s", "deliv/s", "proxy CPU", "CPU ms", "vs peer"))
    p("%-2s %-46s %9s %9s %9s %8s  %s" % ("", "", "(accept)", "", "s", "/msg", ""))
    for r in rows:
        if r.get("status") != "ok":
            p("%-2s %-46s n/a (%s)" % (r["id"], r["name"], r.get("reason", "?")))
            continue
        cpu = r.get("cpu_s")
        per = cpu * 1000.0 / r["messages"] if isinstance(cpu, (int, float)) and r.get("messages") else None
        vs = ""
        if r.get("peer"):
            parts = []
            if "ratio_msg_s" in r:
                parts.append("%.2f" % r["ratio_msg_s"])
            if "ratio_delivered_s" in r:
                parts.append("delivered %.2f" % r["ratio_delivered_s"])
            vs = "%s:%s = %s" % (r["id"], r["peer"], ", ".join(parts) if parts else "n/a (peer row not measured)")
            if len(r.get("ratio_msg_s_per_round", [])) > 1:
                vs += " (rounds: %s; median %.2f)" % (
                    " ".join("%.2f" % x for x in r["ratio_msg_s_per_round"]), r["ratio_msg_s_median"])
        p("%-2s %-46s %9s %9s %9s %8s  %s" % (
            r["id"], r["name"], _fmt(r.get("msg_s")), _fmt(r.get("delivered_s")),
            _fmt(cpu, 2), _fmt(per, 3), vs))
    p("")
    milter_report(rows, byid, p)
    scale = scale_report(sruns, byid, meta, p)
    c = extra.get("concurrency")
    if c:
        if isinstance(c.get("result"), dict):
            c = dict(c, **c["result"])
        if c.get("status") == "ok":
            p("concurrency: %d idle sessions through %s: %d held (%d alive at the end), "
              "opened in %.2f s; daemon RSS %d -> %d kB = %s bytes/session; "
              "new session banner in %s s (%s); RLIMIT_NOFILE daemon %s, client %s"
              % (c["sessions"], c.get("path", "?"), c["held"], c["alive_after_probe"], c["open_s"],
                 c["rss_before_kb"], c["rss_held_kb"], _fmt(c.get("rss_per_session_bytes")),
                 _fmt(c.get("probe_banner_s"), 3),
                 "within 1 s" if c.get("probe_within_1s") else "NOT within 1 s",
                 c.get("daemon_nofile"), c.get("client_nofile")))
        else:
            p("concurrency: n/a (%s)" % c.get("reason", "?"))
    pf = extra.get("passflows")
    if pf:
        r = pf.get("result") if isinstance(pf.get("result"), dict) else {}
        if pf.get("status") == "ok":
            mem = pf.get("set_bytes_per_element")
            p("passed flows: %d held open through pass mode (opened in %.2f s), both directions of "
              "each on the fast path (%d set elements); a line on each: %d answered (%.2f s); idle "
              "%d s until the set's %d s timeout emptied it (%d left); a line on each again: %d "
              "answered (%.2f s), %d set elements after; set memory %s bytes/element = %s for "
              "these flows (measured on a scratch set of the same type); daemon CPU %s s"
              % (r["flows"], r["open_s"], r["set_held"], r["round1_ok"], r["round1_s"],
                 r["idle_s"], r["fast_timeout_s"], r["set_after_idle"], r["round2_ok"],
                 r["round2_s"], r["set_after_round2"], _fmt(mem),
                 ("%.1f MiB" % (mem * r["set_held"] / 1048576.0)) if isinstance(mem, (int, float)) else "n/a",
                 _fmt(pf.get("daemon_cpu_s"), 2)))
        else:
            p("passed flows: n/a (%s)" % pf.get("reason", "?"))
    lat = extra.get("latency")
    if lat:
        if lat.get("status") == "n/a":
            p("latency: n/a (%s)" % lat.get("reason", "?"))
        else:
            p("latency per message (connect .. 250 after the dot, %s sequential transactions):"
              % lat.get("count"))
            d = lat.get("direct") or {}
            for key, label in (("direct", "direct"), ("relay", "mxbridge live relay"),
                               ("incoming", "mxbridge incoming proxy (fsync)")):
                v = lat.get(key)
                if not isinstance(v, dict) or v.get("median_ms") is None:
                    reason = v.get("reason") if isinstance(v, dict) else None
                    p("  %-34s n/a (%s)" % (label, reason or "no data"))
                    continue
                add = ""
                if key != "direct" and d.get("median_ms") is not None:
                    add = "  added: median %+.3f ms, p99 %+.3f ms" % (
                        v["median_ms"] - d["median_ms"], v["p99_ms"] - d["p99_ms"])
                p("  %-34s median %8.3f ms  p99 %8.3f ms%s" % (label, v["median_ms"], v["p99_ms"], add))
    cs = extra.get("connrate")
    if cs:
        if cs.get("status") == "ok":
            p("connection setup rate (test/bench-conn.sh):")
            for line in (cs.get("output") or "").splitlines():
                p("  " + line)
        else:
            p("connection setup rate: n/a (%s)" % cs.get("reason", "?"))
    if meta.get("notes"):
        p("")
        for n in meta["notes"]:
            p("note: " + n)
    if out:
        doc = dict(meta)
        doc["rows"] = rows
        doc.update(extra)
        if scale:
            doc["scale"] = scale
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.rename(tmp, out)
        p("")
        p("results: %s" % out)
    return 0


def cmd_scrape(args):
    host, port, interval, path = args[0], int(args[1]), float(args[2]), args[3]
    n = 0
    while True:
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=5) as c:
                c.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n"
                          b"Connection: close\r\n\r\n")
                data = b""
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    data += b
            if data.startswith(b"HTTP/1.1 200") and b"# TYPE" in data:
                n += 1
                with open(path + ".tmp", "w") as f:
                    f.write("%d\n" % n)
                os.replace(path + ".tmp", path)
        except OSError:
            pass
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "cpu":
        print("%.2f" % cpu_tree(int(args[0])))
    elif cmd == "rss":
        print(rss_kb(int(args[0])))
    elif cmd == "latency":
        return cmd_latency(args)
    elif cmd == "idle":
        return cmd_idle(args)
    elif cmd == "holdsrv":
        return cmd_holdsrv(args)
    elif cmd == "passflows":
        return cmd_passflows(args)
    elif cmd == "cpus":
        return cmd_cpus(args)
    elif cmd == "scrape":
        return cmd_scrape(args)
    elif cmd == "add":
        return cmd_add(args)
    elif cmd == "report":
        return cmd_report(args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
