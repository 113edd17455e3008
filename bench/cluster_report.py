#!/usr/bin/env python3
"""Markdown tables for bench/cluster-scale.sh, from the load generator's JSON
reports (and the Redis CPU samples) in OUT.

    cluster_report.py OUT routing CHANNELS "node:channels:received ..."
    cluster_report.py OUT publish NAME...
    cluster_report.py OUT scale N...
    cluster_report.py OUT latency NAME...
    cluster_report.py OUT failover NAME...
"""
import glob
import json
import os
import sys

OUT = sys.argv[1]


def step(name):
    """The first (only) step of a run's report, {} when the run failed."""
    try:
        with open(os.path.join(OUT, f"{name}.json")) as f:
            return json.load(f)["steps"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return {}


def redis_cpu(name):
    """Redis CPU seconds (all servers of the run) while it ran."""
    try:
        after, before = open(os.path.join(OUT, f"{name}.redis-cpu")).read().split()
        return float(after) - float(before)
    except (OSError, ValueError):
        return None


def redis_reads(name):
    """Request reads by the Redis servers of the run while it ran."""
    try:
        after, before = open(os.path.join(OUT, f"{name}.redis-reads")).read().split()
        return int(after) - int(before)
    except (OSError, ValueError):
        return None


def us_per(seconds, count):
    return f"{seconds * 1e6 / count:.1f}" if seconds is not None and count else "–"


def routing(channels, line):
    rows = [entry.split(":") for entry in line.split()]
    leader = step("route")
    published = leader.get("published", 0)
    lost = sum(step(os.path.basename(p)[:-5]).get("lost", 0)
               for p in glob.glob(os.path.join(OUT, "route*.json")))
    print(f"{published} events published over {channels} channels; lost deliveries: {lost}\n")
    print("| node | channels served | share of channels | bus events received | share of events published |")
    print("|---|---|---|---|---|")
    for node, served, received in rows:
        share = int(served) / int(channels)
        got = int(float(received or 0))
        print(f"| {node} | {served} | {share:.0%} | {got} | "
              f"{got / published if published else 0:.1%} |")


def publish(names):
    labels = {
        "pubsolo": "standalone node (no Redis)",
        "pubsingle": "1 node, one redis-server",
        "pubcluster": "1 node, Redis Cluster (3 shards)",
        "pubreplicas": "1 node, Redis Cluster (3 shards + 1 replica each)",
        "pubwait": "same, publish_wait_replicas = 1",
    }
    base = step(names[0]).get("achieved_rate") or 0
    print("| setup | publishes/s (closed loop) | vs standalone | publish RTT p50 / p99 ms "
          "| node CPU µs/publish | Redis CPU µs/publish | Redis reads/publish | lost |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        s = step(name)
        rate, published = s.get("achieved_rate", 0), s.get("published", 0)
        rtt = s.get("publish_rtt_ms", {})
        print(f"| {labels.get(name, name)} | {rate:.0f} | {rate / base if base else 0:.2f}x | "
              f"{rtt.get('p50', 0):.2f} / {rtt.get('p99', 0):.2f} | "
              f"{us_per(s.get('broker_cpu_secs'), published)} | "
              f"{us_per(redis_cpu(name), published)} | {per(redis_reads(name), published)} | "
              f"{s.get('lost', '–')} |")


def per(count, published):
    return f"{count / published:.2f}" if count is not None and published else "–"


def scale(counts):
    print("| broker nodes (3 shards) | publishes/s, all nodes | deliveries/s | "
          "node CPU µs/publish (mean) | Redis CPU µs/publish | lost |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        steps = [step(f"scale{n}n{i}") for i in range(1, int(n) + 1)]
        rate = sum(s.get("achieved_rate", 0) for s in steps)
        deliveries = sum(s.get("deliveries_per_s", 0) for s in steps)
        published = sum(s.get("published", 0) for s in steps)
        node_cpu = sum(s.get("broker_cpu_secs") or 0 for s in steps)
        lost = sum(s.get("lost", 0) for s in steps)
        print(f"| {n} | {rate:.0f} | {deliveries:.0f} | {us_per(node_cpu, published)} | "
              f"{us_per(redis_cpu(f'scale{n}'), published)} | {lost} |")


def latency(names):
    labels = {"latsingle": "one redis-server", "latcluster": "Redis Cluster (3 shards)"}
    print("| Redis (subscribers on node A, publisher on node B) | deliveries/s | latency p50 ms "
          "| p99 ms | node A CPU µs/delivery | lost |")
    print("|---|---|---|---|---|---|")
    for name in names:
        s = step(name)
        lat = s.get("latency_ms", {})
        cpu = s.get("cpu_us_per_delivery")
        print(f"| {labels.get(name, name)} | {s.get('deliveries_per_s', 0):.0f} | "
              f"{lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | "
              f"{cpu if cpu is None else f'{cpu:.1f}'} | {s.get('lost', '–')} |")


def failover(names):
    labels = {"foasync": "publish_wait_replicas = 0", "fowait": "publish_wait_replicas = 1",
              "fokeyed": "publish_wait_replicas = 1, every publish keyed and retried"}
    print("| primary killed under load | publishes acknowledged | refused (503) | "
          "acknowledged but lost | duplicates | out of order |")
    print("|---|---|---|---|---|---|")
    for name in names:
        s = step(name)
        print(f"| {labels.get(name, name)} | {s.get('published', 0)} | "
              f"{s.get('publish_errors', 0)} | {s.get('lost', '–')} | "
              f"{s.get('duplicates', '–')} | {s.get('out_of_order', '–')} |")


PART, ARGS = sys.argv[2], sys.argv[3:]
if PART == "routing":
    routing(ARGS[0], ARGS[1])
else:
    {"publish": publish, "scale": scale, "latency": latency, "failover": failover}[PART](ARGS)
print()
