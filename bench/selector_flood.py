#!/usr/bin/env python3
"""Client side of bench/selector-flood.sh: expensive Mercure selectors.

    selector_flood.py cost  --port P --pid PID --kind KIND --requests N
    selector_flood.py flood --port P --kind KIND --procs 3 --conns 50 --seconds 20

`cost` sends N requests of one kind, one after the other (a new connection
each, the answer's head read), and prints the broker's CPU time per request
(utime + stime of PID from /proc, in clock ticks: 10 ms) and the statuses.
`flood` keeps PROCS processes x CONNS keep-alive connections busy with
requests of one kind for SECONDS while this process times `GET /healthz`
every 100 ms on a fresh connection; it prints the /healthz latencies and
what the flood got. The flooding processes run at nice 10, so that the
probe's own scheduling delay does not count as the broker's.

Kinds (loopback only, 127.0.0.1):
  idle       (flood only) no flood: the probe's baseline on this machine now
  plain      HEAD with one exact matcher: the flood's control, nothing to compile
  same       HEAD with 100 copies of https://example.com/:a(\\w{200})/0 (issue 24)
  distinct   HEAD with 100 such patterns, each under its own path, new in
             every request (nothing cached helps)
  templates  QUERY (compatibility mode) with 1,000 different URI templates
             of 95 `{+a}` expressions each (a 1 MB body), new in every request
  variables  the same with templates of one expression of 200 variables,
             `{/a,a,…}` (an 850 KB body)
"""

import argparse
import multiprocessing
import os
import socket
import statistics
import threading
import time
import urllib.parse

HUB = "/.well-known/mercure"


def quote(text):
    return urllib.parse.quote(text, safe="")


def request_bytes(kind, tag):
    """The request of `kind`; `tag` makes its selectors new."""
    word = "/:a(\\w{200})/0"
    if kind == "plain":
        return f"HEAD {HUB}?match=urn%3Aplain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    if kind in ("same", "distinct"):
        if kind == "same":
            patterns = ["https://example.com" + word] * 100
        else:
            patterns = [f"https://example.com/{tag}/{n}" + word for n in range(100)]
        query = "&".join("match_urlpattern=" + quote(p) for p in patterns)
        return f"HEAD {HUB}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    if kind in ("templates", "variables"):
        if kind == "templates":
            expressions = "{+a}" * 95
        else:
            expressions = "{/" + ",".join(["a"] * 200) + "}"
        templates = [f"https://example.com/{tag}/{n}" + expressions for n in range(1000)]
        body = "&".join("topic=" + quote(t) for t in templates).encode()
        head = (
            f"QUERY {HUB} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body
    raise SystemExit(f"unknown kind {kind}")


def read_head(sock):
    """Reads a response head; returns (status, content-length or None)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, length, rest


def exchange(sock, payload, is_head):
    """Sends one request on a keep-alive connection, reads its answer."""
    sock.sendall(payload)
    status, length, rest = read_head(sock)
    if not is_head and length:
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
    return status


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def cost(args):
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    statuses = {}
    before = cpu_ticks(args.pid)
    started = time.monotonic()
    for n in range(args.requests):
        payload = request_bytes(args.kind, f"c{os.getpid()}-{n}-{time.time_ns()}")
        with socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout) as sock:
            sock.sendall(payload)
            status, _, _ = read_head(sock)
        statuses[status] = statuses.get(status, 0) + 1
    elapsed = time.monotonic() - started
    # Let the broker finish what the last answer left (a stream's end).
    time.sleep(0.2)
    used = (cpu_ticks(args.pid) - before) * tick_ms
    print(
        f"cost kind={args.kind} requests={args.requests} "
        f"cpu_ms_per_request={used / args.requests:.1f} "
        f"wall_s={elapsed:.1f} statuses={statuses}"
    )


def flood_connection(port, kind, deadline, counts, lock):
    """One connection's loop: a request, its answer, again."""
    is_head = kind not in ("templates", "variables")
    sock = None
    n = 0
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            n += 1
            tag = f"f{os.getpid()}-{threading.get_ident()}-{n}"
            status = exchange(sock, request_bytes(kind, tag), is_head)
        except (OSError, ValueError):
            status = "error"
            if sock is not None:
                sock.close()
            sock = None
        with lock:
            counts[status] = counts.get(status, 0) + 1
    if sock is not None:
        sock.close()


def flood_process(port, kind, conns, seconds, queue):
    # Below the probe: on a shared core the probe's own scheduling delay
    # would count as the broker's.
    os.nice(10)
    deadline = time.monotonic() + seconds
    counts, lock = {}, threading.Lock()
    threads = [
        threading.Thread(target=flood_connection, args=(port, kind, deadline, counts, lock))
        for _ in range(conns)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    queue.put(counts)


def healthz(port, timeout):
    """Milliseconds for one GET /healthz on a fresh connection, or None."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, _, _ = read_head(sock)
        if status != 200:
            return None
    except OSError:
        return None
    return (time.monotonic() - started) * 1000


def flood(args):
    queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=flood_process, args=(args.port, args.kind, args.conns, args.seconds, queue)
        )
        for _ in range(0 if args.kind == "idle" else args.procs)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1)  # the flood is on every connection before the first probe
    latencies, failed = [], 0
    deadline = time.monotonic() + args.seconds - 1
    while time.monotonic() < deadline:
        took = healthz(args.port, args.timeout)
        if took is None:
            failed += 1
        else:
            latencies.append(took)
        time.sleep(0.1)
    counts = {}
    for _ in procs:
        for status, n in queue.get(timeout=args.seconds + 60).items():
            counts[status] = counts.get(status, 0) + n
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    over = sum(1 for t in latencies if t >= 100)
    if latencies:
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        summary = (
            f"p50_ms={statistics.median(ordered):.1f} p99_ms={p99:.1f} "
            f"max_ms={ordered[-1]:.1f}"
        )
    else:
        summary = "p50_ms=- p99_ms=- max_ms=-"
    total = sum(counts.values())
    print(
        f"flood kind={args.kind} connections={args.procs * args.conns} "
        f"seconds={args.seconds} healthz_probes={len(latencies) + failed} "
        f"healthz_failed={failed} healthz_over_100ms={over} {summary} "
        f"flood_answers={total} per_s={total / args.seconds:.0f} statuses={counts}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["cost", "flood"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--kind", default="same")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    cost(args) if args.mode == "cost" else flood(args)


if __name__ == "__main__":
    main()
