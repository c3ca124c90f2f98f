#!/usr/bin/env python3
"""Medians over the repeats of tests/bench/run.sh, as the Markdown tables BENCHMARKS.md shows.

    python3 tests/bench/summary.py OUT_DIR

Reads OUT_DIR/fixed-N-I.json and OUT_DIR/ramp-I.json (the JSON `tablecast bench --json`
writes). Every figure is the median over the repeats of that run; the "runs" column says how
many repeats there were, and "busy" lists the repeats whose window saw more than 0.3 cores of
other load on the machine (those figures are suspect).
"""

import glob
import json
import os
import re
import statistics
import sys

BUSY = 0.3


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        m = re.match(r"(fixed-(\d+)|ramp|ramploss)-(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        key = f"fixed-{m.group(2)}" if m.group(2) else m.group(1)
        with open(path) as f:
            runs.setdefault(key, []).append((int(m.group(3)), json.load(f)))
    return runs


def row(label, reps, pick):
    """`pick(run)` returns (tablecast report, janus report) for one repeat."""
    cells = []
    busy = []
    for i, d in reps:
        for r in pick(d):
            if r and (r.get("other_cpu_cores") or 0) > BUSY:
                busy.append(str(i))
    def col(which, *path):
        return med([get(pick(d)[which], *path) for _, d in reps])
    def kib(which):
        v = col(which, "server_rss_per_subscriber_bytes")
        return None if v is None else v / 1024
    for which in (0, 1):
        cells += [
            fmt(col(which, "subscribers"), 0),
            fmt(col(which, "loss_ratio") and col(which, "loss_ratio") * 100, 3),
            "/".join(fmt(col(which, "forward_latency_ms", p), 2) for p in ("p50", "p99")),
            fmt(col(which, "forward_latency_by_packet_ms", "video_keyframe", "p99"), 1),
            "/".join(fmt(col(which, "join_to_keyframe_ms", p), 0) for p in ("p50", "p99")),
            fmt(col(which, "server_cpu_cores"), 2),
            fmt(kib(which), 0),
        ]
    gen = med([get(d, "loadgen_cpu_cores") for _, d in reps])
    other = med([get(d, "other_cpu_cores") for _, d in reps])
    sat = any(get(d, "loadgen_saturated") or get(d, "janus", "loadgen_saturated") for _, d in reps)
    return (
        f"| {label} | {len(reps)} | "
        + " | ".join(cells)
        + f" | {fmt(gen, 2)}{' (saturated)' if sat else ''} | {fmt(other, 2)} | {','.join(sorted(set(busy))) or '-'} |"
    )


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = load(out)
    head = (
        "| run | runs | tc subs | tc loss % | tc fwd p50/p99 ms | tc keyframe p99 ms | tc join p50/p99 ms"
        " | tc cpu | tc KiB/sub | janus subs | janus loss % | janus fwd p50/p99 ms"
        " | janus keyframe p99 ms | janus join p50/p99 ms | janus cpu | janus KiB/sub"
        " | load tool cpu | other load | busy repeats |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    both = lambda d: (d, d.get("janus"))
    for key in sorted((k for k in runs if k.startswith("fixed-")), key=lambda k: int(k[6:])):
        print(row(f"N={key[6:]}", runs[key], both))
    for ramp, label in (("ramp", "ramp, issue 5's rule"), ("ramploss", "ramp, loss only")):
        if ramp not in runs:
            continue
        print(row(f"{label} (last good step)", runs[ramp], both))
    for ramp, label in (("ramp", "issue 5's rule (loss < 0.5%, p99 < 10 ms)"),
                        ("ramploss", "loss alone (loss < 0.5%, p99 < 1 s)")):
        if ramp not in runs:
            continue
        reps = runs[ramp]
        tc = [get(d, "max_subscribers") for _, d in reps]
        ja = [get(d, "janus", "max_subscribers") for _, d in reps]
        print()
        print(f"Ramp maximum by {label}, each repeat: tablecast {tc}, Janus {ja}; "
              f"medians {fmt(med(tc), 0)} and {fmt(med(ja), 0)}.")
        for _, d in reps:
            for r in (d, d.get("janus")):
                if not r:
                    continue
                steps = [
                    f"{s['subscribers']}:{'ok' if s['passed'] else 'FAIL'}"
                    f"(loss {s['loss_ratio'] * 100:.3f}%, p99 {s['forward_latency_ms']['p99']:.1f} ms,"
                    f" cpu {fmt(s.get('server_cpu_cores'), 2)}, other {fmt(s.get('other_cpu_cores'), 2)})"
                    for s in r.get("steps", [])
                ]
                print(f"- {r['target']}: " + ", ".join(steps))
    print()
    for key in sorted((k for k in runs if k.startswith("fixed-")), key=lambda k: int(k[6:])):
        reps = runs[key]
        fan = [get(d, "control_fanout_ms") for _, d in reps]
        bets = [get(d, "bets") for _, d in reps]
        print(
            f"- N={key[6:]}: control fan-out p50/p99 "
            f"{fmt(med([get(f, 'p50') for f in fan]), 1)}/{fmt(med([get(f, 'p99') for f in fan]), 1)} ms"
            f" ({fmt(med([get(f, 'samples') for f in fan]), 0)} samples); bets "
            f"{fmt(med([get(b, 'accepted_per_sec') for b in bets]), 0)}/s accepted, latency p50/p99 "
            f"{fmt(med([get(b, 'latency_ms', 'p50') for b in bets]), 1)}/"
            f"{fmt(med([get(b, 'latency_ms', 'p99') for b in bets]), 1)} ms, node cpu "
            f"{fmt(med([get(b, 'server_cpu_cores') for b in bets]), 2)}, rejected "
            f"{fmt(med([get(b, 'rejected') for b in bets]), 0)}, unanswered "
            f"{fmt(med([get(b, 'unanswered') for b in bets]), 0)}"
        )


if __name__ == "__main__":
    main()
