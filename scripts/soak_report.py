"""Summarises a soak run of scripts/soak.sh and draws its RSS over time.

    python3 scripts/soak_report.py OUT_DIR

Reads OUT_DIR/samples.tsv (the broker sampled every 5 s) and OUT_DIR/loadgen.json
(sse-loadgen's report), prints the figures docs/hostile-clients.md quotes and writes
OUT_DIR/soak-rss.svg: the broker's RSS and its retained history over time. Retention
counts as full from the first sample where the history budget trimmed events; the
soak passes when nothing was lost and RSS in its last minute is within 5 % of RSS in
the first minute after retention filled, with no growth in file descriptors.
Standard library only (no plotting package needed).
"""
import csv
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "samples.tsv"), delimiter="\t"))
samples = [{k: int(v or 0) for k, v in row.items()} for row in rows]
report = json.load(open(out / "loadgen.json"))
step = report["steps"][0] if report.get("steps") else {}

# Only the publishing phase: once every stream is open, until the load ends.
loaded = [s for s in samples if s["open_streams"] >= report["subscribers"]]
if not loaded:
    sys.exit("no sample with every subscriber connected")
t0, t_end = loaded[0]["secs"], loaded[-1]["secs"]
full = next((s["secs"] for s in loaded if s["budget_trimmed"] > 0), None)


def mean_rss(lo, hi):
    window = [s["rss_kib"] for s in loaded if lo <= s["secs"] < hi]
    return sum(window) / len(window) if window else float("nan")


first_minute = mean_rss(full, full + 60) if full is not None else float("nan")
last_minute = mean_rss(t_end - 60, t_end + 1)
drift = (last_minute - first_minute) / first_minute * 100 if full is not None else float("nan")
# File descriptors once the run is in its steady state (retention full).
steady = [s for s in loaded if full is not None and s["secs"] >= full] or loaded
fds_first, fds_last = steady[0]["fds"], steady[-1]["fds"]
lost = step.get("lost", -1)
summary = {
    "published": step.get("published"),
    "events_per_s": round(step.get("achieved_rate", 0), 1),
    "target_events_per_s": step.get("target_rate"),
    "expected_deliveries": step.get("expected"),
    "received": step.get("received"),
    "lost": lost,
    "duplicates": step.get("duplicates"),
    "out_of_order": step.get("out_of_order"),
    "latency_p99_ms": step.get("latency_ms", {}).get("p99"),
    "retention_full_after_s": None if full is None else full - t0,
    "rss_first_minute_after_full_mib": round(first_minute / 1024, 1),
    "rss_last_minute_mib": round(last_minute / 1024, 1),
    "rss_drift_percent": round(drift, 2),
    "fds_first_last": [fds_first, fds_last],
    "history_bytes_last": loaded[-1]["history_bytes"],
    "pass": lost == 0 and abs(drift) <= 5 and fds_last <= fds_first,
}
for key, value in summary.items():
    print(f"{key}: {value}")

# The plot: RSS (MiB) and retained history (MiB) against minutes.
W, H, L, B, R, T = 640, 300, 56, 36, 16, 24
xs = [(s["secs"] - t0) / 60 for s in samples]
series = [
    ("broker RSS", "#1f77b4", [s["rss_kib"] / 1024 for s in samples]),
    ("retained history", "#ff7f0e", [s["history_bytes"] / 2**20 for s in samples]),
]
x_lo, x_hi = min(xs), max(xs) or 1
y_hi = max(max(v) for _, _, v in series) * 1.1 or 1


def px(x, y):
    return (L + (x - x_lo) / (x_hi - x_lo or 1) * (W - L - R), H - B - y / y_hi * (H - B - T))


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-6}" text-anchor="middle">minutes since every subscriber was connected</text>',
       f'<text x="12" y="{H/2}" transform="rotate(-90 12 {H/2})" text-anchor="middle">MiB</text>']
for i in range(6):
    y = y_hi * i / 5
    _, py = px(x_lo, y)
    svg.append(f'<text x="{L-4}" y="{py+4}" text-anchor="end">{y:.0f}</text>')
    svg.append(f'<line x1="{L}" y1="{py}" x2="{W-R}" y2="{py}" stroke="#ddd"/>')
for m in range(int(x_lo), int(x_hi) + 1):
    x, _ = px(m, 0)
    svg.append(f'<text x="{x}" y="{H-B+14}" text-anchor="middle">{m}</text>')
if full is not None:
    x, _ = px((full - t0) / 60, 0)
    svg.append(f'<line x1="{x}" y1="{T}" x2="{x}" y2="{H-B}" stroke="#999" stroke-dasharray="4"/>')
    svg.append(f'<text x="{x+4}" y="{T+10}">retention full</text>')
for n, (name, color, ys) in enumerate(series):
    points = " ".join(f"{px(x, y)[0]:.1f},{px(x, y)[1]:.1f}" for x, y in zip(xs, ys))
    svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    svg.append(f'<text x="{W-R-150}" y="{T+14+14*n}" fill="{color}">{name}</text>')
svg.append("</svg>")
(out / "soak-rss.svg").write_text("\n".join(svg) + "\n")
print(f"plot: {out / 'soak-rss.svg'}")
sys.exit(0 if summary["pass"] else 1)
