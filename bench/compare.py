#!/usr/bin/env python3
"""Before/after figures of our broker from several `bench/run.sh --broker ours` result folders.

    bench/compare.py --label before bench/results/before-* --label after bench/results/after-*

Each `--label NAME` starts a group; the folders after it are its runs. For every figure it
prints the median and the spread (min-max) over the group's runs, as a Markdown table:
idle RSS per subscriber and connect rate (workload 1), the highest zero-loss fan-out rate,
its p99 and broker CPU per delivery (workload 2), the closed-loop publish rate (workload 4)
and the Mercure fan-out (workload 7). A figure a group did not measure is left blank.
"""
import argparse
import glob
import json
import os
import statistics
import sys


def runs_of(folder):
    path = os.path.join(folder, "runs.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        run = json.loads(line)
        if run.get("broker") != "ours" or run.get("skipped"):
            continue
        report = os.path.join(folder, run["file"])
        if os.path.exists(report):
            try:
                run["report"] = json.load(open(report))
            except ValueError:
                continue
            out.append(run)
    return out


def best(report):
    steps = report.get("steps") or []
    at = report.get("best_passing_step")
    return steps[at] if at is not None and at < len(steps) else None


def figures(folder):
    """Figure name -> value, for one result folder."""
    out = {}
    for run in runs_of(folder):
        rep, wl, n, pl = run["report"], run["workload"], run["subscribers"], run["placement"]
        if wl == "idle":
            broker = rep.get("broker") or {}
            if broker.get("rss_per_conn_kib") is not None:
                out[f"idle RSS per subscriber, {n} subscribers (KiB)"] = broker["rss_per_conn_kib"]
            rate = (rep.get("connect") or {}).get("rate_per_s")
            if rate:
                out[f"connect rate, {n} subscribers (/s)"] = rate
        elif wl in ("fanout", "mercure"):
            name = "fan-out" if wl == "fanout" else "Mercure fan-out"
            step = best(rep)
            if step is None:
                continue
            out[f"{name} {n}, {pl}: highest zero-loss deliveries/s"] = step.get("deliveries_per_s")
            out[f"{name} {n}, {pl}: broker CPU per delivery (µs)"] = step.get("cpu_us_per_delivery")
            out[f"{name} {n}, {pl}: p99 at that step (ms)"] = (step.get("latency_ms") or {}).get("p99")
        elif wl == "publish":
            steps = rep.get("steps") or []
            if steps:
                out[f"closed-loop publishes/s, {pl}"] = steps[0].get("achieved_rate")
                out[f"broker CPU per publish, {pl} (µs)"] = per_publish(steps[0])
    return out


def per_publish(step):
    cpu, published = step.get("broker_cpu_secs"), step.get("published")
    if cpu is None or not published:
        return None
    return cpu / published * 1e6


def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return ""
    med = statistics.median(values)
    digits = 0 if med >= 100 else 2
    text = f"{med:,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f}, n={len(values)})"
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="+", help="--label NAME then result folders, repeated")
    groups, current = [], None
    argv = sys.argv[1:]
    i = 0
    while i < len(argv):
        if argv[i] == "--label":
            current = (argv[i + 1], [])
            groups.append(current)
            i += 2
            continue
        if current is None:
            parser.error("start with --label NAME")
        current[1].extend(sorted(glob.glob(argv[i])) or [argv[i]])
        i += 1
    table = {}
    order = []
    for label, folders in groups:
        for folder in folders:
            for name, value in figures(folder).items():
                if name not in table:
                    table[name] = {}
                    order.append(name)
                table[name].setdefault(label, []).append(value)
    labels = [label for label, _ in groups]
    print("| figure | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name in order:
        print(f"| {name} | " + " | ".join(fmt(table[name].get(label, [])) for label in labels) + " |")


if __name__ == "__main__":
    main()
