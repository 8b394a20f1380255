#!/usr/bin/env python3
"""What scripts/bench does with its runs (one JSON object per line: target, scenario, result).

  bench-report.py --p99-over RUNS TARGET SCENARIO MS
      exit 0 when that scenario's last run had p99 over MS (or fell behind), else 1
  bench-report.py --write RUNS JSON_OUT MARKDOWN COMMIT STORE QUICK PARTS
      writes every run to JSON_OUT, and the table of medians between
      <!-- bench:begin --> and <!-- bench:end --> in MARKDOWN; when PARTS is only "node" or
      only "cluster", the other part's runs are kept from the JSON_OUT of an earlier run
"""

import datetime
import json
import os
import platform
import statistics
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def results(runs, target, scenario):
    return [r["result"] for r in runs
            if r["target"] == target and r["scenario"] == scenario and "result" in r]


def fell_behind(result):
    """A run that lost deliveries (not delivered within the settle time) or took much longer
    to deliver than to send did not keep up with its rate."""
    return result.get("lost", 0) > 0 or result["seconds"] > result.get("sending_seconds", 0) + 5


def p99_over(runs, target, scenario, ms):
    found = results(runs, target, scenario)
    if not found:
        return True  # a failed run ends the search too
    last = found[-1]
    return last["latency_ms"]["p99"] > ms or fell_behind(last)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def med(runs, target, scenario, *path):
    def dig(r):
        for key in path:
            r = r.get(key) if isinstance(r, dict) else None
        return r
    return median([dig(r) for r in results(runs, target, scenario)])


def fmt(value, digits=0, unit=""):
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}{unit}"
    return f"{value:,.{digits}f}{unit}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.{digits}f}x"


def clean(runs, target, scenario):
    found = results(runs, target, scenario)
    if not found:
        return "failed"
    if all(r.get("clean", True) for r in found):
        return "clean"
    return "NOT CLEAN"


def latency(runs, target, scenario):
    p50 = med(runs, target, scenario, "latency_ms", "p50")
    p99 = med(runs, target, scenario, "latency_ms", "p99")
    if p50 is None:
        return "-"
    behind = any(fell_behind(r) for r in results(runs, target, scenario))
    return f"{fmt(p50, 2)} / {fmt(p99, 2)} ms" + (" (fell behind)" if behind else "")


def highest_rate_under(runs, target, ms):
    best = None
    for run in runs:
        if run["target"] != target or not run["scenario"].startswith("pairs-"):
            continue
        rate = int(run["scenario"].split("-")[1])
        result = run.get("result")
        if result and result["latency_ms"]["p99"] <= ms and not fell_behind(result):
            best = max(best or 0, rate)
    return best


def table(runs, store):
    b, one, three = "bare", "chatd-1", "chatd-3"
    rows = []

    def row(*cells):
        rows.append("| " + " | ".join(cells) + " |")

    row("scenario", "bare fixture", "chatd, 1 node (SQLite)", "chatd / bare", f"chatd, 3 nodes ({store} + Redis)", "audit")
    row(*["---"] * 6)
    f_b = med(runs, b, "fanout-closed", "deliveries_per_second")
    f_1 = med(runs, one, "fanout-closed", "deliveries_per_second")
    row("fan-out, 500 members, window 64: deliveries/s", fmt(f_b), fmt(f_1), ratio(f_1, f_b),
        fmt(med(runs, three, "fanout-closed", "deliveries_per_second")),
        clean(runs, one, "fanout-closed"))
    c_b = med(runs, b, "fanout-closed", "server_cpu_us_per_delivery")
    c_1 = med(runs, one, "fanout-closed", "server_cpu_us_per_delivery")
    row("same: server CPU per delivery", fmt(c_b, 2, " µs"), fmt(c_1, 2, " µs"), ratio(c_1, c_b),
        fmt(med(runs, three, "fanout-closed", "server_cpu_us_per_delivery"), 2, " µs"), "")
    o_b = med(runs, b, "fanout-open", "latency_ms", "p99")
    o_1 = med(runs, one, "fanout-open", "latency_ms", "p99")
    row("fan-out, open loop 50,000 deliveries/s: p50 / p99", latency(runs, b, "fanout-open"),
        latency(runs, one, "fanout-open"), ratio(o_1, o_b) + " (p99)",
        latency(runs, three, "fanout-open"), clean(runs, one, "fanout-open"))
    p_b = med(runs, b, "pairs-500", "latency_ms", "p99")
    p_1 = med(runs, one, "pairs-500", "latency_ms", "p99")
    row("500 pairs, 500 msgs/s in all: p50 / p99", latency(runs, b, "pairs-500"),
        latency(runs, one, "pairs-500"), ratio(p_1, p_b) + " (p99)",
        latency(runs, three, "pairs-500"), clean(runs, one, "pairs-500"))
    for rate in (1000, 2000):
        row(f"500 pairs, {rate:,} msgs/s: p50 / p99", "", latency(runs, one, f"pairs-{rate}"), "",
            latency(runs, three, f"pairs-{rate}"), clean(runs, one, f"pairs-{rate}"))
    h1, h3 = highest_rate_under(runs, one, 100), highest_rate_under(runs, three, 100)
    row("highest tried rate with p99 ≤ 100 ms (pairs)", "", fmt(h1, 0, " msgs/s") if h1 else "none",
        "", fmt(h3, 0, " msgs/s") if h3 else "none", "")
    for scenario in sorted({r["scenario"] for r in runs if r["scenario"].startswith("idle-")},
                           key=lambda s: int(s.split("-")[1])):
        n = int(scenario.split("-")[1])
        i_b = med(runs, b, scenario, "bytes_per_connection")
        i_1 = med(runs, one, scenario, "bytes_per_connection")
        row(f"idle connections ({n:,}): bytes each", fmt(i_b), fmt(i_1), ratio(i_1, i_b), "", "")
    row("persist (500 pairs, window 4 per user): messages/s", "",
        fmt(med(runs, one, "persist", "messages_per_second")), "",
        fmt(med(runs, three, "persist", "messages_per_second")), clean(runs, one, "persist"))
    row("history, newest 50, 32 clients: requests/s", "",
        fmt(med(runs, one, "history", "requests_per_second")), "",
        fmt(med(runs, three, "history", "requests_per_second")), clean(runs, one, "history"))
    for scenario, label in (("storm-1-room", "1 room"), ("storm-5-rooms", "5 rooms")):
        cells = []
        for target in (one, three):
            found = results(runs, target, scenario)
            if found:
                r = found[-1]
                cells.append(f"{r['clients']:,} clients: {r['seconds_until_all_live']} s, "
                             f"{r['store_calls_per_client']} store calls each")
            else:
                cells.append("-")
        row(f"reconnect storm, {label} per client", "", cells[0], "", cells[1], "")
    failed = [f"{r['target']} {r['scenario']}" for r in runs if "failed" in r]
    return "\n".join(rows), failed


PART_TARGETS = {"node": ("bare", "chatd-1"), "cluster": ("chatd-3",)}


def write(runs_path, json_out, markdown, commit, store, quick, parts):
    runs = load(runs_path)
    kept = [p for p in PART_TARGETS if p not in parts.split()]
    if kept and os.path.exists(json_out):
        earlier = json.load(open(json_out))
        keep = {t for p in kept for t in PART_TARGETS[p]}
        # A run kept once already keeps the date of the run that made it.
        runs += [dict(r, earlier=r.get("earlier", earlier["date"]))
                 for r in earlier["runs"] if r["target"] in keep]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}"
    with open(json_out, "w") as f:
        json.dump({"date": now, "commit": commit, "machine": machine, "mongodb_wire_server": store,
                   "quick": quick == "true", "runs": runs}, f, indent=1)
        f.write("\n")
    body, failed = table(runs, store)
    note = (f"Last run: {now}, commit {commit}, `scripts/bench{' --quick' if quick == 'true' else ''}`"
            f" on this machine ({machine}; the load generator shares it). Medians of the runs of "
            f"each scenario; every run in docs/benchmarks.json.")
    if failed:
        note += " Failed runs: " + ", ".join(failed) + "."
    earlier = sorted({r["earlier"] for r in runs if "earlier" in r})
    if earlier:
        note += f" The {' and '.join(kept)} rows come from the run of {', '.join(earlier)}."
    section = f"<!-- bench:begin -->\n{note}\n\n{body}\n<!-- bench:end -->"
    text = open(markdown).read()
    start, end = text.find("<!-- bench:begin -->"), text.find("<!-- bench:end -->")
    if start < 0 or end < 0:
        sys.exit(f"{markdown} has no bench markers")
    text = text[:start] + section + text[end + len("<!-- bench:end -->"):]
    with open(markdown, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    if sys.argv[1] == "--p99-over":
        _, _, path, target, scenario, ms = sys.argv
        sys.exit(0 if p99_over(load(path), target, scenario, float(ms)) else 1)
    if sys.argv[1] == "--write":
        write(*sys.argv[2:9])
