#!/usr/bin/env python3
"""Write BENCHMARKS.md (and the scaling plot) from one bench/run.sh results directory.

    python3 bench/report.py --results bench/results/<stamp> --output BENCHMARKS.md [--plot PNG] [--no-plot]

Reads RESULTS/meta.json (machine, versions, command), RESULTS/runs.jsonl (one line per
loadgen run: broker, placement, workload, file, exact loadgen command lines) and the JSON
reports of sse-loadgen. Everything in the tables, including whether a target is met, is
computed from those files. The sections between <!-- optimisations --> and
<!-- /optimisations --> and between <!-- notes --> and <!-- /notes --> of an existing
OUTPUT are kept as they are.

The plot (default: DIR-OF-OUTPUT/bench/bench-scaling.png) needs matplotlib; when it cannot
be imported, `pip install matplotlib` is tried once; if that fails too the plot is skipped
with a message and the report says so. Python 3 standard library otherwise.
"""
import argparse
import json
import os
import re
import subprocess
import sys

BROKERS = ("ours", "nchan")
PLACEMENT_LABEL = {
    "pinned": "pinned (broker on one core, load generator on the other)",
    "unpinned": "unpinned (no taskset; each broker uses what it can)",
}
LOADGEN_BOUND = 0.9  # loadgen leader process at >= 90 % of a core: figure may be the tool's limit


# ---------------------------------------------------------------- data
def load_results(d):
    meta = {}
    mp = os.path.join(d, "meta.json")
    if os.path.exists(mp):
        meta = json.load(open(mp))
    runs = []
    rp = os.path.join(d, "runs.jsonl")
    if os.path.exists(rp):
        for line in open(rp):
            line = line.strip()
            if not line:
                continue
            run = json.loads(line)
            try:
                run["r"] = json.load(open(os.path.join(d, run["file"])))
            except (OSError, ValueError):
                run["r"] = None  # the loadgen wrote nothing (crash / timeout): shown as "-"
            runs.append(run)
    return meta, runs


def find(runs, workload, broker, placement, subscribers=None):
    hit = None
    for run in runs:
        if run["workload"] == workload and run["broker"] == broker and run["placement"] == placement \
                and (subscribers is None or run["subscribers"] == subscribers):
            hit = run  # the last one wins if a name was run twice
    return hit["r"] if hit else None


def placements(runs, workload):
    seen = []
    for p in ("pinned", "unpinned"):
        if any(r["workload"] == workload and r["placement"] == p for r in runs):
            seen.append(p)
    return seen


def sizes(runs, workload, placement=None):
    return sorted({r["subscribers"] for r in runs if r["workload"] == workload
                   and (placement is None or r["placement"] == placement)})


def g(r, *path):
    """Nested get; None on anything missing."""
    for k in path:
        if r is None:
            return None
        try:
            r = r[k]
        except (KeyError, IndexError, TypeError):
            return None
    return r


def best_step(r):
    i = g(r, "best_passing_step")
    return None if i is None else g(r, "steps", i)


def first_fail(r):
    for s in g(r, "steps") or []:
        if s.get("kind", "").startswith("resume"):
            continue
        if not s.get("pass"):
            return s
    return None


def step_wall(s):
    if not s:
        return None
    return max(s.get("publish_elapsed_s") or 0, s.get("duration_s") or 0) + (s.get("drain_s") or 0)


def broker_cores(s):
    cpu, wall = g(s, "broker_cpu_secs"), step_wall(s)
    return cpu / wall if cpu is not None and wall else None


def deliveries_per_cpu_s(s):
    cpu, rec = g(s, "broker_cpu_secs"), g(s, "received")
    return rec / cpu if cpu and rec else None


def loadgen_bound(r):
    """True when the load generator leader was near a full core at the best or first failing step."""
    for s in (best_step(r), first_fail(r)):
        sh = g(s, "loadgen_core_share")
        if sh is not None and sh >= LOADGEN_BOUND:
            return True
    return False


def fail_reason(r):
    s = first_fail(r)
    if s is None:
        return "no step failed (ramp ended)" if g(r, "steps") else None
    why = []
    if s.get("lost"):
        why.append(f"lost {s['lost']}")
    if s.get("duplicates"):
        why.append(f"{s['duplicates']} dup")
    if s.get("out_of_order"):
        why.append(f"{s['out_of_order']} out of order")
    if s.get("publish_errors"):
        why.append(f"{s['publish_errors']} publish errors")
    if s.get("fell_behind"):
        why.append("publisher fell behind")
    p99 = g(s, "latency_ms", "p99")
    if p99 is not None and p99 > 100:
        why.append(f"p99 {p99:.0f} ms")
    return f"step {s['step']} ({s['target_rate']:.0f} ev/s): " + (", ".join(why) or "failed")


# ---------------------------------------------------------------- formatting
def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def ratio(o, n):
    try:
        if o is None or n is None or float(n) == 0:
            return "-"
        return f"{float(o) / float(n):.2f}"
    except (TypeError, ValueError):
        return "-"


class Table:
    def __init__(self, first_col):
        self.rows = []
        self.first = first_col

    def add(self, key, metric, o, n, with_ratio=True):
        self.rows.append((key, metric, fmt(o), fmt(n), ratio(o, n) if with_ratio else "-"))

    def md(self):
        out = [f"| {self.first} | metric | ours | nchan | ours/nchan |", "|---|---|---:|---:|---:|"]
        out += [f"| {k} | {m} | {o} | {n} | {r} |" for k, m, o, n, r in self.rows]
        return "\n".join(out)


# ---------------------------------------------------------------- sections
def idle_section(runs, out):
    for pl in placements(runs, "idle"):
        t = Table("subscribers")
        for n in sizes(runs, "idle", pl):
            o, c = find(runs, "idle", "ours", pl, n), find(runs, "idle", "nchan", pl, n)
            t.add(f"{n:,}", "subscribers connected ↑", g(o, "connect", "ok"), g(c, "connect", "ok"))
            t.add(f"{n:,}", "broker RSS KiB per connection ↓", g(o, "broker", "rss_per_conn_kib"), g(c, "broker", "rss_per_conn_kib"))
            t.add(f"{n:,}", "broker RSS MiB after connect", mib(g(o, "broker", "after_connect", "rss_kib")), mib(g(c, "broker", "after_connect", "rss_kib")))
            t.add(f"{n:,}", "connect rate (subscriptions/s) ↑", g(o, "connect", "rate_per_s"), g(c, "connect", "rate_per_s"))
        out.append(f"\n### 1. Idle subscribers over 100 channels — {PLACEMENT_LABEL[pl]}\n")
        out.append("RSS per connection = (broker RSS 2 s after the last subscription is ready − RSS before) / subscribers; "
                   "a fresh broker per size.\n")
        out.append(t.md())


def mib(kib):
    return None if kib is None else kib / 1024.0


def fanout_section(runs, out, meta):
    for pl in placements(runs, "fanout"):
        t = Table("subscribers")
        notes = []
        for n in sizes(runs, "fanout", pl):
            o, c = find(runs, "fanout", "ours", pl, n), find(runs, "fanout", "nchan", pl, n)
            bo, bc = best_step(o), best_step(c)
            k = f"{n:,}"
            t.add(k, "**highest zero-loss deliveries/s, p99 < 100 ms** ↑", g(o, "best_passing_deliveries_per_s"), g(c, "best_passing_deliveries_per_s"))
            t.add(k, "publish rate of that step (events/s)", g(o, "best_passing_rate"), g(c, "best_passing_rate"))
            t.add(k, "p99 latency ms at that step", g(bo, "latency_ms", "p99"), g(bc, "latency_ms", "p99"))
            common = common_step(o, c)
            if common is not None:
                t.add(k, f"p99 latency ms at the highest step both passed ({g(o, 'steps', common, 'deliveries_per_s') or 0:,.0f}/s) ↓",
                      g(o, "steps", common, "latency_ms", "p99"), g(c, "steps", common, "latency_ms", "p99"))
            t.add(k, "broker CPU µs per delivery at that step ↓", g(bo, "cpu_us_per_delivery"), g(bc, "cpu_us_per_delivery"))
            t.add(k, "deliveries per broker CPU-second ↑", deliveries_per_cpu_s(bo), deliveries_per_cpu_s(bc))
            t.add(k, "broker CPU in cores at that step", broker_cores(bo), broker_cores(bc), with_ratio=False)
            t.add(k, "load generator (leader) share of a core at that step", g(bo, "loadgen_core_share"), g(bc, "loadgen_core_share"), with_ratio=False)
            t.add(k, "idle RSS KiB per subscriber (before publishing) ↓", g(o, "broker", "rss_per_conn_kib"), g(c, "broker", "rss_per_conn_kib"))
            for b, r in (("ours", o), ("nchan", c)):
                if r is None:
                    continue
                notes.append(f"{b} {n:,}: ramp stopped at {fail_reason(r)}"
                             + ("; **load generator near a full core, the figure may be the tool's limit**" if loadgen_bound(r) else ""))
        out.append(f"\n### 2. Fan-out ({meta.get('sweep_channels', '10')} channels, ramped publish rate) — {PLACEMENT_LABEL[pl]}\n")
        out.append(f"Ramp in deliveries/s, the same steps for both brokers: from {meta.get('sweep_start_dps', '?')}/s, "
                   f"×{meta.get('sweep_factor', '?')} per {meta.get('step_secs', '?')} s step, on the same connections; a step fails "
                   "on any loss, duplicate, reordering, publish error, p99 > 100 ms or a publisher below 95 % of the target rate. "
                   "The 10,000-subscriber row is the issue's fan-out workload.\n")
        out.append(t.md())
        if notes:
            out.append("\n" + "\n".join(f"- {x}" for x in notes))


def common_step(o, c):
    a, b = g(o, "best_passing_step"), g(c, "best_passing_step")
    if a is None or b is None:
        return None
    # same ramp (start, factor) for both brokers: step k has the same target rate
    if g(o, "steps", 0, "target_rate") != g(c, "steps", 0, "target_rate"):
        return None
    return min(a, b)


def manych_section(runs, out):
    for pl in placements(runs, "manych"):
        o, c = find(runs, "manych", "ours", pl), find(runs, "manych", "nchan", pl)
        s0o, s0c = g(o, "steps", 0), g(c, "steps", 0)
        rate = g(s0o, "target_rate") or g(s0c, "target_rate")
        n = g(o, "subscribers") or g(c, "subscribers")
        t = Table("figure")
        k = f"at {fmt(rate)} events/s"
        t.add(k, "lost deliveries ↓", g(s0o, "lost"), g(s0c, "lost"), with_ratio=False)
        t.add(k, "achieved publish rate (events/s)", g(s0o, "achieved_rate"), g(s0c, "achieved_rate"))
        for q, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
            t.add(k, f"latency {name} ms ↓", g(s0o, "latency_ms", q), g(s0c, "latency_ms", q))
        t.add(k, "broker CPU µs per delivery ↓", g(s0o, "cpu_us_per_delivery"), g(s0c, "cpu_us_per_delivery"))
        t.add("ramp", "**highest zero-loss deliveries/s, p99 < 100 ms** ↑", g(o, "best_passing_deliveries_per_s"), g(c, "best_passing_deliveries_per_s"))
        t.add("ramp", "p99 latency ms at that step", g(best_step(o), "latency_ms", "p99"), g(best_step(c), "latency_ms", "p99"))
        out.append(f"\n### 3. Many channels: {fmt(n)} subscribers on {fmt(n)} channels — {PLACEMENT_LABEL[pl]}\n")
        out.append(f"First step at {fmt(rate)} events/s (the issue's workload), then the rate is ramped on the same connections "
                   "until a step fails, for the highest zero-loss rate.\n")
        out.append(t.md())
        notes = [f"{b}: ramp stopped at {fail_reason(r)}" + ("; load generator near a full core" if loadgen_bound(r) else "")
                 for b, r in (("ours", o), ("nchan", c)) if r is not None]
        if notes:
            out.append("\n" + "\n".join(f"- {x}" for x in notes))


def publish_section(runs, out, meta):
    for pl in placements(runs, "publish"):
        o, c = find(runs, "publish", "ours", pl), find(runs, "publish", "nchan", pl)
        so, sc = g(o, "steps", 0), g(c, "steps", 0)
        t = Table("figure")
        k = "closed loop"
        t.add(k, "**publishes/s** ↑", g(so, "achieved_rate"), g(sc, "achieved_rate"))
        t.add(k, "publish round trip p50 ms ↓", g(so, "publish_rtt_ms", "p50"), g(sc, "publish_rtt_ms", "p50"))
        t.add(k, "publish round trip p99 ms ↓", g(so, "publish_rtt_ms", "p99"), g(sc, "publish_rtt_ms", "p99"))
        t.add(k, "publish errors ↓", g(so, "publish_errors"), g(sc, "publish_errors"), with_ratio=False)
        t.add(k, "lost deliveries ↓", g(so, "lost"), g(sc, "lost"), with_ratio=False)
        t.add(k, "broker CPU µs per publish ↓", per_publish(so), per_publish(sc))
        t.add(k, "broker CPU in cores", broker_cores(so), broker_cores(sc), with_ratio=False)
        t.add(k, "load generator share of a core", g(so, "loadgen_core_share"), g(sc, "loadgen_core_share"), with_ratio=False)
        out.append(f"\n### 4. Publish throughput: {meta.get('pub_publishers', '?')} keep-alive publishers, "
                   f"{meta.get('pub_channels', '?')} channels × 1 subscriber — {PLACEMENT_LABEL[pl]}\n")
        out.append(t.md())
        flags = [b for b, s in (("ours", so), ("nchan", sc)) if (g(s, "loadgen_core_share") or 0) >= LOADGEN_BOUND]
        if flags:
            out.append(f"\n- load generator near a full core for {', '.join(flags)}: the publish rate may be the tool's limit")


def per_publish(s):
    cpu, p = g(s, "broker_cpu_secs"), g(s, "published")
    return cpu * 1e6 / p if cpu is not None and p else None


def resume_section(runs, out, meta):
    for pl in placements(runs, "resume"):
        o, c = find(runs, "resume", "ours", pl), find(runs, "resume", "nchan", pl)
        t = Table("figure")
        n = g(o, "subscribers") or g(c, "subscribers")
        k = "resume"
        t.add(k, "**seconds until all caught up** ↓", g(o, "resume", "all_caught_up_secs"), g(c, "resume", "all_caught_up_secs"))
        t.add(k, "seconds until all reconnected", g(o, "resume", "reconnect_secs"), g(c, "resume", "reconnect_secs"))
        t.add(k, "missed events expected", g(o, "resume", "expected"), g(c, "resume", "expected"), with_ratio=False)
        t.add(k, "lost ↓", g(o, "resume", "lost"), g(c, "resume", "lost"), with_ratio=False)
        t.add(k, "duplicates ↓", g(o, "resume", "duplicates"), g(c, "resume", "duplicates"), with_ratio=False)
        t.add(k, "reconnect failures ↓", g(o, "resume", "reconnect_failed"), g(c, "resume", "reconnect_failed"), with_ratio=False)
        t.add(k, "broker CPU s for the storm ↓", g(o, "resume", "broker_cpu_secs"), g(c, "resume", "broker_cpu_secs"))
        out.append(f"\n### 5. Resume storm: {fmt(n)} subscribers, {fmt(g(o, 'channels') or g(c, 'channels'))} channels, "
                   f"{meta.get('resume_behind', '?')} events behind, all reconnect at once with Last-Event-ID — {PLACEMENT_LABEL[pl]}\n")
        out.append(t.md())


# ---------------------------------------------------------------- targets
def linear_section(runs, out, meta):
    for pl in placements(runs, "linear"):
        t = Table("subscribers")
        for n in sizes(runs, "linear", pl):
            o, c = g(find(runs, "linear", "ours", pl, n), "steps", 0), g(find(runs, "linear", "nchan", pl, n), "steps", 0)
            t.add(n, "deliveries/s", g(o, "deliveries_per_s"), g(c, "deliveries_per_s"), with_ratio=False)
            t.add(n, "lost ↓", g(o, "lost"), g(c, "lost"), with_ratio=False)
            t.add(n, "p99 latency ms ↓", g(o, "latency_ms", "p99"), g(c, "latency_ms", "p99"))
            t.add(n, "broker CPU µs per delivery ↓", g(o, "cpu_us_per_delivery"), g(c, "cpu_us_per_delivery"))
            t.add(n, "**deliveries per broker CPU-second** ↑", deliveries_per_cpu_s(o), deliveries_per_cpu_s(c))
        out.append(f"\n### 6. Linear cost: {meta.get('linear_rate', '?')} events/s over {meta.get('sweep_channels', '?')} channels "
                   f"at every size (the same events per subscriber per second) — {PLACEMENT_LABEL[pl]}\n")
        out.append("The fan-out ramps measure each size at its own highest rate, where a subscriber gets more events per "
                   "write the faster it goes; this holds the per-subscriber rate fixed, so the CPU per delivery is like for like.\n")
        out.append(t.md())


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def targets_section(runs, out, meta):
    rows = []
    # 1. memory per idle subscriber <= Nchan's
    for pl in placements(runs, "idle"):
        parts, oks = [], []
        for n in sizes(runs, "idle", pl):
            o = g(find(runs, "idle", "ours", pl, n), "broker", "rss_per_conn_kib")
            c = g(find(runs, "idle", "nchan", pl, n), "broker", "rss_per_conn_kib")
            if o is None or c is None:
                continue
            parts.append(f"{n:,}: {o:.2f} vs {c:.2f} KiB")
            oks.append(o <= c)
        rows.append((f"memory per idle subscriber ≤ Nchan's (workload 1, {pl})", "; ".join(parts) or "not measured",
                     verdict(all(oks) if oks else None)))
    # 2. fan-out >= 1.5x, zero loss, p99 no worse (at the highest step both passed)
    for pl in placements(runs, "fanout"):
        ns = sizes(runs, "fanout", pl)
        n = 10000 if 10000 in ns else (ns[len(ns) // 2] if ns else None)
        o, c = find(runs, "fanout", "ours", pl, n), find(runs, "fanout", "nchan", pl, n)
        rows.append(rate_target(f"fan-out delivery rate ≥ 1.5× Nchan's, zero loss, p99 no worse ({fmt(n)} subscribers, {pl})",
                                o, c, 1.5, common_step(o, c)))
    # 3. many channels, same rule; p99 compared at the first step (same rate for both)
    for pl in placements(runs, "manych"):
        o, c = find(runs, "manych", "ours", pl), find(runs, "manych", "nchan", pl)
        rows.append(rate_target(f"many-channel delivery rate ≥ 1.5× Nchan's, zero loss, p99 no worse ({pl})",
                                o, c, 1.5, common_step(o, c)))
    # 4. publish >= 2x
    for pl in placements(runs, "publish"):
        o, c = g(find(runs, "publish", "ours", pl), "steps", 0), g(find(runs, "publish", "nchan", pl), "steps", 0)
        ro, rc = g(o, "achieved_rate"), g(c, "achieved_rate")
        if ro is None or rc is None or not rc:
            rows.append((f"publish throughput ≥ 2× Nchan's ({pl})", "not measured", verdict(None)))
        else:
            clean = not g(o, "publish_errors") and not g(o, "lost")
            rows.append((f"publish throughput ≥ 2× Nchan's ({pl})",
                         f"{ro:,.0f} vs {rc:,.0f} publishes/s = {ro / rc:.2f}×" + ("" if clean else " (ours had errors or loss)"),
                         verdict(ro / rc >= 2.0 and clean)))
    # 5. linear cost: deliveries per broker CPU-second within 20 % from 1k to 19k subscribers, at the same
    #    per-subscriber event rate (workload 6); also shown at each ramp's best step, which is not like for like
    for pl in placements(runs, "linear"):
        ns = sizes(runs, "linear", pl)
        got = [(n, deliveries_per_cpu_s(g(find(runs, "linear", "ours", pl, n), "steps", 0))) for n in ns]
        theirs = [deliveries_per_cpu_s(g(find(runs, "linear", "nchan", pl, n), "steps", 0)) for n in ns]
        label = (f"cost grows linearly: ours' deliveries per CPU-second within 20 % over {fmt(ns[0]) if ns else '?'}…"
                 f"{fmt(ns[-1]) if ns else '?'} subscribers at {meta.get('linear_rate', '?')} events/s (workload 6, {pl})")
        if len(ns) < 2 or not all(v for _, v in got):
            rows.append((label, "not measured at every size", verdict(None)))
            continue
        lo, hi = min(v for _, v in got), max(v for _, v in got)
        txt = ", ".join(f"{n:,}: {v:,.0f}" for n, v in got) + f" (min/max = {lo / hi:.3f})"
        if all(theirs):
            txt += f"; Nchan min/max = {min(theirs) / max(theirs):.3f}"
        rows.append((label, txt, verdict(lo >= 0.8 * hi)))
    for pl in placements(runs, "fanout"):
        ns = sizes(runs, "fanout", pl)
        vals = [(n, deliveries_per_cpu_s(best_step(find(runs, "fanout", "ours", pl, n)))) for n in ns]
        got = [(n, v) for n, v in vals if v]
        label = (f"(the same at each fan-out ramp's best step, i.e. at different rates per subscriber) ours' deliveries per "
                 f"CPU-second over {fmt(ns[0]) if ns else '?'}…{fmt(ns[-1]) if ns else '?'} subscribers ({pl})")
        if len(got) < 2 or len(got) < len(ns):
            rows.append((label, "not measured at every size", verdict(None)))
        else:
            lo, hi = min(v for _, v in got), max(v for _, v in got)
            rows.append((label, ", ".join(f"{n:,}: {v:,.0f}" for n, v in got) + f" (min/max = {lo / hi:.3f})",
                         verdict(lo >= 0.8 * hi)))
    out.append("\n## Targets (issue 7)\n")
    out.append("Computed from the result tables below on every run. Rates are each broker's highest zero-loss step with p99 < 100 ms; "
               "\"p99 no worse\" compares p99 at the highest ramp step both brokers passed (the same target rate for both), "
               "with no tolerance; \"within 20 %\" means the lowest value is at least 80 % of the highest; "
               "the linear-cost target is judged on workload 6 (the same events per subscriber per second at every size); "
               "the rows in parentheses take deliveries per CPU-second at each size's highest passing ramp step, for reference.\n")
    out.append("| target | measured (ours vs nchan) | |")
    out.append("|---|---|---|")
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]


def rate_target(label, o, c, factor, common):
    ro, rc = g(o, "best_passing_deliveries_per_s"), g(c, "best_passing_deliveries_per_s")
    if o is None or c is None:
        return (label, "not measured", verdict(None))
    if rc is None or not rc:
        return (label, f"Nchan passed no step (ours: {fmt(ro)}/s)", verdict(None))
    if ro is None:
        return (label, f"ours passed no step (Nchan: {rc:,.0f}/s)", verdict(False))
    p_o, p_c = g(o, "steps", common, "latency_ms", "p99"), g(c, "steps", common, "latency_ms", "p99")
    p99_ok = p_o is not None and p_c is not None and p_o <= p_c
    txt = f"{ro:,.0f} vs {rc:,.0f} deliveries/s = {ro / rc:.2f}×; p99 {fmt(p_o)} vs {fmt(p_c)} ms"
    for b, r in (("ours", o), ("Nchan's", c)):
        if first_fail(r) is None:
            txt += f" ({b} ramp never failed: its rate is a lower bound)"
        if loadgen_bound(r):
            txt += f" ({b} load generator near a full core)"
    rate_ok = ro / rc >= factor
    # a ramp that never failed only gives a lower bound: it cannot decide against that broker
    if (not rate_ok and first_fail(o) is None) or (rate_ok and first_fail(c) is None):
        return (label, txt, "**inconclusive** (extend the ramp)" if p99_ok else verdict(False))
    return (label, txt, verdict(rate_ok and p99_ok))


def anomalies_section(runs, out):
    """Everything a run reported that the tables do not show: missing reports, timeouts, errors, stray events."""
    lines = []
    for run in runs:
        r = run["r"]
        if run.get("skipped"):
            lines.append(f"`{run['name']}`: not run: {run['skipped']}")
            continue
        if r is None:
            lines.append(f"`{run['name']}`: no report (the load generator crashed or was killed; see its .log)")
            continue
        bits = []
        if r.get("timed_out"):
            bits.append("hit --max-secs (timed_out)")
        if g(r, "connect", "failed"):
            bits.append(f"{r['connect']['failed']} subscriptions failed to connect")
        for k in ("unexpected_disconnects", "foreign_events", "unparsed_events"):
            if r.get(k):
                bits.append(f"{k.replace('_', ' ')}: {r[k]:,}")
        if r.get("errors"):
            bits.append("errors: " + ", ".join(f"{k} × {v}" for k, v in r["errors"].items()))
        if bits:
            lines.append(f"`{run['name']}`: " + "; ".join(bits))
    out.append("\n## Anomalies\n")
    if lines:
        out.append("Unparsed events are events whose data is not a load generator payload, e.g. our broker's "
                   "`broker.replay` notice sent once to every subscriber that resumes with Last-Event-ID. "
                   "Ramp steps that failed are not listed here (see the notes under each fan-out table).\n")
        out += [f"- {x}" for x in lines]
    else:
        out.append("None.")


# ---------------------------------------------------------------- plot
def plot(runs, path, out):
    try:
        import matplotlib
    except ImportError:
        print("report: matplotlib is missing; trying `pip install matplotlib` …", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], check=True, timeout=300)
            import matplotlib  # noqa: F811
        except Exception as e:  # noqa: BLE001
            msg = f"plot skipped: matplotlib could not be installed ({e})"
            print("report: " + msg, file=sys.stderr)
            return msg
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for pl in placements(runs, "fanout"):
        for b in BROKERS:
            pts = []
            for n in sizes(runs, "fanout", pl):
                r = find(runs, "fanout", b, pl, n)
                if r is None:
                    continue
                pts.append((n, g(r, "best_passing_deliveries_per_s"), deliveries_per_cpu_s(best_step(r)),
                            g(r, "broker", "rss_per_conn_kib"), first_fail(r) is None))
            if pts:
                series[(b, pl)] = pts
    if not series:
        msg = "plot skipped: no fan-out sweep results"
        print("report: " + msg, file=sys.stderr)
        return msg
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colour = {"ours": "tab:blue", "nchan": "tab:orange"}
    style = {"pinned": "-", "unpinned": "--"}
    panels = [(1, "highest zero-loss deliveries/s (p99 < 100 ms)\n(hollow: ramp never failed, lower bound)", 1e-3, "thousand deliveries/s"),
              (2, "deliveries per broker CPU-second", 1e-3, "thousand deliveries / CPU-s"),
              (3, "idle broker RSS per subscriber", 1, "KiB")]
    for ax, (idx, title, scale, unit) in zip(axes, panels):
        for (b, pl), pts in sorted(series.items()):
            xs = [p[0] for p in pts if p[idx] is not None]
            ys = [p[idx] * scale for p in pts if p[idx] is not None]
            if xs:
                ax.plot(xs, ys, style[pl], marker="o", color=colour[b], label=f"{b}, {pl}")
            if idx == 1:  # ramps that never failed: the rate is only a lower bound (hollow marker)
                lb = [(p[0], p[1] * scale) for p in pts if p[1] is not None and p[4]]
                if lb:
                    ax.plot([x for x, _ in lb], [y for _, y in lb], "o", markersize=10, markerfacecolor="white",
                            markeredgecolor=colour[b], zorder=3)
        ax.set_title(title)
        ax.set_xlabel("subscribers (10 channels)")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"report: plot written to {path}", file=sys.stderr)
    return None


# ---------------------------------------------------------------- main
def preserved(old, tag, default):
    m = re.search(rf"<!-- {tag} -->.*?<!-- /{tag} -->", old, re.S)
    return m.group(0) if m else f"<!-- {tag} -->\n{default}\n<!-- /{tag} -->"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="a bench/run.sh output directory")
    ap.add_argument("--output", required=True, help="BENCHMARKS.md to (re)write")
    ap.add_argument("--plot", help="PNG path (default: DIR-OF-OUTPUT/bench/bench-scaling.png)")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args()

    meta, runs = load_results(a.results)
    if not runs:
        sys.exit(f"report: no runs in {a.results}/runs.jsonl")
    outdir = os.path.dirname(os.path.abspath(a.output))
    plot_path = a.plot or os.path.join(outdir, "bench", "bench-scaling.png")
    old = open(a.output).read() if os.path.exists(a.output) else ""

    o = ["# Benchmarks: sse-broker vs Nchan", ""]
    o.append("<!-- Generated by bench/report.py from a bench/run.sh results directory. Edit only the "
             "optimisations and notes sections: everything else is rewritten on the next run. -->")
    if meta.get("quick") == "1":
        o.append("\n> **Quick run (`--quick`)**: tiny sizes and 1-second steps to check the scripts; these numbers mean nothing.")
    la = meta.get("loadavg_start", "")
    try:
        if float(la.split()[0]) > 0.5:
            o.append(f"\n> **Warning:** load average at the start was {la} (end: {meta.get('loadavg_end', '?')}): "
                     "the machine was not quiet, so the figures are skewed.")
    except (ValueError, IndexError):
        pass
    if meta.get("ours_bin_stale"):
        o.append(f"\n> **Warning:** `{meta['ours_bin_stale']}` is newer than the measured binary `{meta.get('ours_bin')}`: "
                 "the broker may not have been rebuilt after the last change (the commit below may not match the binary).")
    o.append("\n## Run\n")
    o.append("| | |\n|---|---|")
    items = [
        ("date (UTC)", f"{meta.get('started', '?')} → {meta.get('finished', '?')} ({fmt(int(meta['elapsed_secs']) / 60.0) if meta.get('elapsed_secs') else '?'} min)"),
        ("machine", f"{meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, {meta.get('mem_total', '?')} RAM, {meta.get('kernel', '?')}"),
        ("load average start / end", f"{meta.get('loadavg_start', '?')} / {meta.get('loadavg_end', '?')}"),
        ("ours", f"`{meta.get('ours_version', '?')}`, commit `{meta.get('ours_commit', '?')}`"
                 + (f" (+{meta.get('ours_dirty')} modified files)" if meta.get("ours_dirty") not in (None, "0", "?") else "")
                 + f", binary `{meta.get('ours_bin', '?')}` built {meta.get('ours_bin_mtime', '?')}"),
        ("Nchan", f"{meta.get('nginx_version', '?')}, {meta.get('nchan_version', '?')}, one worker, config `{meta.get('nchan_conf', '?')}` "
                  "(+ `worker_rlimit_nofile 65536`, `access_log off`)"),
        ("load generator", f"bench/loadgen (`sse-loadgen`), commit `{meta.get('loadgen_commit', '?')}`, one thread per process, "
                           "≤ 18,000 subscribers per process (source addresses 127.0.0.1, 127.0.0.2, …)"),
        ("placements", f"pinned: broker `taskset -c {meta.get('broker_cpu', '0')}`, load generator(s) `taskset -c {meta.get('lg_cpu', '1')}` "
                       "(a per-core comparison; ours then runs one HTTP worker); unpinned: no taskset for either (ours runs one HTTP worker per "
                       "core, Nchan its one configured worker — a second one does not raise its rate)"),
        ("order", "workload outer loop, broker inner loop; which broker goes first alternates from one workload run to the next; "
                  "a freshly started broker for every run"),
        ("raw results", f"`{os.path.abspath(a.results)}`"),
    ]
    o += [f"| {k} | {v} |" for k, v in items]
    o.append("\nCommand:\n")
    o.append(f"```sh\n{meta.get('command', '?')}\n```")
    o.append("\nArrows: ↑ higher is better, ↓ lower is better. `-`: not measured or the run produced no report.")

    body = []
    targets_section(runs, body, meta)
    body.append("\n## Results")
    idle_section(runs, body)
    fanout_section(runs, body, meta)
    manych_section(runs, body)
    publish_section(runs, body, meta)
    resume_section(runs, body, meta)
    linear_section(runs, body, meta)

    plot_msg = None if a.no_plot else plot(runs, plot_path, body)
    rel = os.path.relpath(plot_path, outdir)
    o.append("\n## Scaling (fan-out, 10 channels)\n")
    if a.no_plot:
        o.append("(plot not generated: --no-plot)")
    elif plot_msg:
        o.append(f"({plot_msg})")
    else:
        o.append(f"![delivery rate, deliveries per CPU-second and idle RSS per subscriber against subscriber count]({rel})")
    o += body

    anomalies_section(runs, o)
    o.append("\n## Loadgen commands\n")
    o.append("Every load generator invocation of this run (`PID` = the broker's pid, `T` = a random run token, `D` = the "
             "coordination directory of a multi-process run; those are then merged with `sse-loadgen --merge`).\n")
    o.append("<details><summary>commands</summary>\n\n```sh")
    for run in runs:
        o.append(f"# {run['name']}")
        o += [c.strip() for c in run.get("commands", [])]
    o.append("```\n</details>")

    o.append("\n## Optimisations\n")
    o.append(preserved(old, "optimisations", "(Record each optimisation here with its before/after numbers; "
                                              "bench/report.py keeps this section when it rewrites the file.)"))
    o.append("\n## Notes\n")
    o.append(preserved(old, "notes", "(Free text kept across runs.)"))
    text = "\n".join(o) + "\n"
    os.makedirs(outdir, exist_ok=True)
    tmp = a.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.output)
    print(f"report: written to {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
