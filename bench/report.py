#!/usr/bin/env python3
"""report.py — turns bench/run.sh results into docs/benchmarks.md + .png.

Re-render without rerunning (e.g. after editing the notes):
  python3 bench/report.py --results docs/benchmarks.jsonl --out docs/benchmarks.md \\
    --chart docs/benchmarks.png --notes bench/where-the-time-goes.md

Input: one JSON object a line (the first may be {"meta": machine}), {system, config, case, run, result, rss_*,
ctxsw_*}; a meta JSON (machine, mode, sizes); optionally the hand-written
"Where the time goes" notes (bench/where-the-time-goes.md) and the profile
summary of bench/profile.sh. Every figure is the median over runs with
[min–max]; ratios to BullMQ and to the ZeroMQ floor are computed run by run
(run i of am2z against run i of the other, they ran back to back) and then
summarised the same way.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile

SYS_LABEL = {
    ("am2z", "periodic"): "am2z, durability periodic",
    ("am2z", "sync"): "am2z, durability sync",
    ("am2z", "pinned"): "am2z, periodic, one core per process (`--cpus`)",
    ("am2z", "periodic-c16"): "am2z, periodic, worker with 16 slots",
    ("am2z", "sync-c16"): "am2z, sync, worker with 16 slots",
    ("bullmq", "off"): "BullMQ + Redis, persistence off",
    ("bullmq", "aof"): "BullMQ + Redis, AOF everysec",
    ("floor", "none"): "ZeroMQ floor (no codec, no store)",
}
SHORT = {
    ("am2z", "periodic"): "am2z periodic",
    ("am2z", "sync"): "am2z sync",
    ("am2z", "pinned"): "am2z pinned",
    ("am2z", "periodic-c16"): "am2z periodic 16 slots",
    ("am2z", "sync-c16"): "am2z sync 16 slots",
    ("bullmq", "off"): "BullMQ off",
    ("bullmq", "aof"): "BullMQ AOF",
    ("floor", "none"): "ZeroMQ floor",
}
# am2z configuration -> the BullMQ configuration it is compared with
PAIR = {"periodic": "aof", "sync": "aof", "pinned": "aof", "periodic-c16": "aof", "sync-c16": "aof"}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


class Data:
    def __init__(self, rows):
        self.rows = rows

    def series(self, system, config, case, metric):
        """{run: value} of one metric."""
        out = {}
        for r in self.rows:
            if r["system"] == system and r["config"] == config and r["case"] == case:
                v = metric(r) if callable(metric) else r["result"].get(metric)
                if v is not None:
                    out[r["run"]] = float(v)
        return out

    def has(self, system, config, case):
        return any(r["system"] == system and r["config"] == config and r["case"] == case
                   for r in self.rows)


def summary(values):
    values = list(values)
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def pair_ratio(a, b):
    """a, b: {run: value}; ratio a/b run by run."""
    return summary(a[k] / b[k] for k in a if k in b and b[k])


def fmt_us(s):
    if s is None:
        return "n/a"
    return f"{s[0]:,.0f} [{s[1]:,.0f}–{s[2]:,.0f}]"


def fmt_rate(s):
    if s is None:
        return "n/a"
    return f"{s[0]:,.0f} [{s[1]:,.0f}–{s[2]:,.0f}]"


def fmt_ratio(s):
    if s is None:
        return "—"
    return f"{s[0]:.2f}× [{s[1]:.2f}–{s[2]:.2f}]"


def fmt_mib(s):
    if s is None:
        return "n/a"
    return f"{s[0] / 1024:.1f} [{s[1] / 1024:.1f}–{s[2] / 1024:.1f}]"


def configs(d, case):
    return [k for k in SYS_LABEL if d.has(k[0], k[1], case)]


def latency_table(d, case, floor_case, lines):
    lines.append("| system | p50 µs | p99 µs | p50 ÷ BullMQ AOF | p50 ÷ BullMQ off | p50 ÷ floor |")
    lines.append("|---|---|---|---|---|---|")
    floor = d.series("floor", "none", floor_case, "p50_us") if floor_case else {}
    b_aof = d.series("bullmq", "aof", case, "p50_us")
    b_off = d.series("bullmq", "off", case, "p50_us")
    for sysname, cfg in configs(d, case):
        p50 = d.series(sysname, cfg, case, "p50_us")
        p99 = d.series(sysname, cfg, case, "p99_us")
        r_aof = r_off = r_floor = None
        if sysname == "am2z":
            r_aof, r_off = pair_ratio(p50, b_aof), pair_ratio(p50, b_off)
            r_floor = pair_ratio(p50, floor) if floor else None
        lines.append(f"| {SYS_LABEL[(sysname, cfg)]} | {fmt_us(summary(p50.values()))} | "
                     f"{fmt_us(summary(p99.values()))} | {fmt_ratio(r_aof)} | {fmt_ratio(r_off)} | "
                     f"{fmt_ratio(r_floor)} |")


def rate_table(d, case, floor_case, lines):
    lines.append("| system | jobs/s | am2z ÷ BullMQ AOF | am2z ÷ BullMQ off | ÷ floor |")
    lines.append("|---|---|---|---|---|")
    floor = d.series("floor", "none", floor_case, "jobs_per_s") if floor_case else {}
    b_aof = d.series("bullmq", "aof", case, "jobs_per_s")
    b_off = d.series("bullmq", "off", case, "jobs_per_s")
    for sysname, cfg in configs(d, case):
        v = d.series(sysname, cfg, case, "jobs_per_s")
        r_aof = r_off = r_floor = None
        if sysname == "am2z":
            r_aof, r_off = pair_ratio(v, b_aof), pair_ratio(v, b_off)
            r_floor = pair_ratio(v, floor) if floor else None
        lines.append(f"| {SYS_LABEL[(sysname, cfg)]} | {fmt_rate(summary(v.values()))} | "
                     f"{fmt_ratio(r_aof)} | {fmt_ratio(r_off)} | {fmt_ratio(r_floor)} |")


def med(d, system, config, case, metric):
    s = summary(d.series(system, config, case, metric).values())
    return s[0] if s else None


def rss_total(r):
    b, w = r.get("rss_broker_kb"), r.get("rss_worker_kb")
    return b + w if b and w else None


COLOR = {"am2z": 0x3B6EA5, "bullmq": 0xD9822B, "floor": 0x8C8C8C}


def chart(d, path):
    """Three log-scale panels: throughput, round trip p50, session cycle p50."""
    panels = [("tp", "jobs_per_s", "Throughput, ~100 B state (jobs/s, log)"),
              ("rt", "p50_us", "Round trip p50 (µs, log; lower is better)"),
              ("session", "p50_us", "New session → execute → stop p50 (µs, log)")]
    with tempfile.TemporaryDirectory(prefix="am2z-chart-") as tmp:
        return s_chart_in(d, path, panels, tmp)


def s_chart_in(d, path, panels, tmp):
    plots = []
    for i, (case, metric, title) in enumerate(panels):
        dat = os.path.join(tmp, f"p{i}.dat")
        lo = None
        with open(dat, "w") as f:
            for k in SYS_LABEL:
                s = summary(d.series(k[0], k[1], case, metric).values())
                if s:
                    f.write(f"\"{SHORT[k]}\" {s[0]} {s[1]} {s[2]} {COLOR[k[0]]}\n")
                    lo = s[1] if lo is None else min(lo, s[1])
        if lo:
            bottom = 10 ** math.floor(math.log10(lo))
            if lo / bottom < 2:
                bottom /= 10
            plots.append((dat, title, bottom))
    if not plots:
        return False
    gp = os.path.join(tmp, "chart.gp")
    with open(gp, "w") as f:
        f.write(f"""set terminal pngcairo noenhanced size 1500,520 font ",10"
set output "{path}"
set multiplot layout 1,{len(plots)}
set style fill solid 0.75 border -1
set boxwidth 0.6
set logscale y
set grid ytics
set xtics rotate by -30
set key off
set bars 3
""")
        for dat, title, bottom in plots:
            f.write(f'set title "{title}"\nset yrange [{bottom}:*]\nset xrange [-0.6:*]\n'
                    f'plot "{dat}" using 0:2:5:xtic(1) with boxes lc rgb variable, '
                    f'"" using 0:2:3:4 with yerrorbars lc rgb "black" pt -1\n')
        f.write("unset multiplot\n")
    try:
        subprocess.run(["gnuplot", gp], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"report.py: gnuplot failed: {e}")
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--meta", help="machine JSON (default: the {\"meta\": ...} line of --results)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--chart")
    ap.add_argument("--notes")
    ap.add_argument("--profile")
    a = ap.parse_args()
    rows = load(a.results)
    m = json.load(open(a.meta)) if a.meta else next(r["meta"] for r in rows if "meta" in r)
    d = Data([r for r in rows if "meta" not in r and "profile" not in r])
    prof = next((r["profile"] for r in rows if "profile" in r), None)
    sz = m["sizes"]
    L = []
    quick = m["mode"] != "full"
    L.append("# am2z benchmarks")
    L.append("")
    L.append(f"Generated by `bash bench/run.sh{' --quick' if quick else ''}` on {m['started']} "
             f"— **{m['mode']} mode**, {m['runs']} runs per figure, {m['elapsed_s']} s, "
             f"commit `{m['commit']}`. Raw results: `{os.path.basename(a.out)[:-3]}.jsonl` "
             f"(re-render with `python3 bench/report.py --results docs/benchmarks.jsonl ...`).")
    L.append("")
    L.append(f"> Load average before / after: {m['load_before']} / {m['load_after']} on "
             f"{m['cores']} cores. The machine is shared: other builds and tests ran at the same "
             f"time, so these figures are **provisional** — rerun `bash bench/run.sh` on a quiet "
             f"machine before quoting them." + (" Quick mode uses fewer runs and jobs: "
                                                "development only." if quick else ""))
    L.append("")
    for n in m.get("notes", []):
        L.append(f"> **Note:** {n}")
        L.append("")

    # --- README paragraph
    rt_p50 = med(d, "am2z", "periodic", "rt", "p50_us")
    rt_p99 = med(d, "am2z", "periodic", "rt", "p99_us")
    tp_per = med(d, "am2z", "periodic", "tp", "jobs_per_s")
    tp_syn = med(d, "am2z", "sync", "tp", "jobs_per_s")
    b_tp = med(d, "bullmq", "aof", "tp", "jobs_per_s")
    b_rt = med(d, "bullmq", "aof", "rt", "p50_us")
    sc = med(d, "am2z", "periodic", "session", "p50_us")
    b_sc = med(d, "bullmq", "aof", "session", "p50_us")
    fl_rt = med(d, "floor", "none", "rt", "p50_us")
    fl_tp = med(d, "floor", "none", "tp", "jobs_per_s")
    rss = summary(v for v in (rss_total(r) for r in d.rows
                              if r["system"] == "am2z" and r["case"] == "tp") if v)

    def g(x, f="{:,.0f}"):
        return f.format(x) if x is not None else "n/a"

    L.append("## Performance (README section)")
    L.append("")
    L.append("*Text for the README's Performance section (paste below the Status table):*")
    L.append("")
    L.append("```markdown")
    L.append("## Performance")
    L.append("")
    L.append(f"Measured by `bash bench/run.sh` ({m['mode']} mode, {m['started']}, {m['cores']} cores, "
             f"{m['kernel']}; broker, worker and client as separate processes on 127.0.0.1; "
             f"median of {m['runs']} runs — details and method in "
             f"[docs/benchmarks.md](docs/benchmarks.md)):")
    L.append("")
    L.append("| | am2z | BullMQ + Redis (AOF everysec) | bare ZeroMQ |")
    L.append("|---|---|---|---|")
    L.append(f"| round trip p50 / p99 (periodic) | {g(rt_p50)} / {g(rt_p99)} µs | "
             f"{g(b_rt)} / {g(med(d, 'bullmq', 'aof', 'rt', 'p99_us'))} µs | {g(fl_rt)} µs |")
    L.append(f"| throughput, periodic / sync | {g(tp_per)} / {g(tp_syn)} jobs/s | {g(b_tp)} jobs/s | "
             f"{g(fl_tp)} msgs/s |")
    L.append(f"| chain of 3 / parallel of 3, p50 | {g(med(d, 'am2z', 'periodic', 'chain3', 'p50_us'))} / "
             f"{g(med(d, 'am2z', 'periodic', 'par3', 'p50_us'))} µs | "
             f"{g(med(d, 'bullmq', 'aof', 'chain3', 'p50_us'))} / "
             f"{g(med(d, 'bullmq', 'aof', 'par3', 'p50_us'))} µs (flows) | |")
    L.append(f"| new session → execute → stop, p50 | {g(sc)} µs | {g(b_sc)} µs | |")
    b_rss = med(d, "bullmq", "aof", "tp", rss_total)
    L.append(f"| broker + worker peak RSS (throughput run) | {g(rss[0] / 1024 if rss else None, '{:.1f}')} MiB | "
             f"{g(b_rss / 1024 if b_rss else None, '{:.1f}')} MiB (Redis + Node worker) | |")
    L.append("")
    L.append("The numbers come from a shared 2-core VM and are provisional; run the harness on your "
             "hardware. Targets and where the time goes: docs/benchmarks.md.")
    L.append("```")
    L.append("")

    # --- machine
    L.append("## Machine and versions")
    L.append("")
    L.append(f"- CPU: {m['cpu'] or 'unknown'}, {m['cores']} cores; memory {m['mem']}")
    L.append(f"- OS: {m['os']}; kernel {m['kernel']}; compiler: {m['cc']}")
    L.append(f"- libzmq {m['libzmq']}, CZMQ {m['czmq']}, LMDB {m['lmdb']}, msgpack-c {m['msgpack']}, "
             f"OpenSSL {m['openssl']}; build type RelWithDebInfo (-O2 -g)")
    if m["peer"]:
        L.append(f"- Peer: Node.js {m['node']}, Redis {m['redis']} (Debian redis-server), "
                 f"BullMQ {m['bullmq']}, ioredis {m['ioredis']} (bench/peers/bullmq/package-lock.json)")
    L.append(f"- am2z worker: `am2z-example-worker --concurrency {m['worker_concurrency']}` "
             f"(the rows marked \"16 slots\": `--concurrency 16`); "
             f"BullMQ worker concurrency 100; pipelined window {m['window']} jobs, spread over "
             f"1,000 sessions")
    L.append(f"- Sizes: {sz['rounds']:,} round trips, {sz['jobs']:,} pipelined jobs, "
             f"{sz['cycles']:,} session cycles; 4 KiB: {sz['rounds_4k']:,} / {sz['jobs_4k']:,}; "
             f"64 KiB: {sz['rounds_64k']:,} / {sz['jobs_64k']:,}")
    L.append("")

    # --- targets
    L.append("## Targets")
    L.append("")
    L.append("| target | measured (median) | met |")
    L.append("|---|---|---|")

    def tgt(name, val, ok, shown):
        L.append(f"| {name} | {shown} | {'n/a' if val is None else ('yes' if ok else '**no**')} |")

    tgt("round trip p50 ≤ 300 µs (periodic)", rt_p50, rt_p50 is not None and rt_p50 <= 300, f"{g(rt_p50)} µs")
    tgt("round trip p99 ≤ 1 ms (periodic)", rt_p99, rt_p99 is not None and rt_p99 <= 1000, f"{g(rt_p99)} µs")
    tgt("throughput ≥ 60,000 jobs/s (sync)", tp_syn, tp_syn is not None and tp_syn >= 60000, f"{g(tp_syn)} jobs/s")
    r5 = pair_ratio(d.series("am2z", "sync", "tp", "jobs_per_s"), d.series("bullmq", "aof", "tp", "jobs_per_s"))
    tgt("throughput ≥ 5× BullMQ (am2z sync ÷ BullMQ AOF everysec)", r5 and r5[0],
        r5 is not None and r5[0] >= 5, fmt_ratio(r5))
    ch = med(d, "am2z", "periodic", "chain3", "p50_us")
    pa = med(d, "am2z", "periodic", "par3", "p50_us")
    tgt("chain of 3 p50 ≤ 600 µs (periodic)", ch, ch is not None and ch <= 600, f"{g(ch)} µs")
    tgt("parallel of 3 p50 ≤ 450 µs (periodic)", pa, pa is not None and pa <= 450, f"{g(pa)} µs")
    tgt("session create → execute → stop p50 ≤ 500 µs (periodic)", sc, sc is not None and sc <= 500, f"{g(sc)} µs")
    lo = med(d, "am2z", "local", "local", "p50_us")
    tgt("local execute p50 ≤ 1 µs", lo, lo is not None and lo <= 1, f"{g(lo)} µs")
    rss_max = max((summary(v for v in (rss_total(r) for r in d.rows if r["system"] == "am2z"
                                       and r["config"] == c and r["case"] == "tp") if v) or (0,))[0]
                  for c in ("periodic", "sync"))
    tgt("broker + worker peak RSS ≤ 32 MiB during workload 2", rss_max or None,
        rss_max and rss_max <= 32 * 1024,
        f"{rss_max / 1024:.1f} MiB (worse of periodic, sync; worker with "
        f"{m['worker_concurrency']} slots)")
    rss16 = max((summary(v for v in (rss_total(r) for r in d.rows if r["system"] == "am2z"
                                     and r["config"] == c and r["case"] == "tp") if v) or (0,))[0]
                for c in ("periodic-c16", "sync-c16"))
    if rss16:
        tp16 = med(d, "am2z", "sync-c16", "tp", "jobs_per_s")
        tgt("… the same with a 16-slot worker", rss16, rss16 <= 32 * 1024,
            f"{rss16 / 1024:.1f} MiB (sync throughput then {g(tp16)} jobs/s)")
    L.append("")
    pin = m.get("pin") or {}
    prt = med(d, "am2z", "pinned", "rt", "p50_us")
    if prt is not None:
        pch = med(d, "am2z", "pinned", "chain3", "p50_us")
        ppa = med(d, "am2z", "pinned", "par3", "p50_us")
        pse = med(d, "am2z", "pinned", "session", "p50_us")
        ptp = med(d, "am2z", "pinned", "tp", "jobs_per_s")
        r_tp = pair_ratio(d.series("am2z", "pinned", "tp", "jobs_per_s"),
                          d.series("am2z", "periodic", "tp", "jobs_per_s"))
        L.append(f"The latency targets again with each process on one core "
                 f"(`am2z-broker --cpus {pin.get('broker')}`, `am2z-example-worker --cpus "
                 f"{pin.get('worker')}`, the client on CPU {pin.get('client')}), so that a "
                 f"process's threads — its loop, ZeroMQ's I/O thread, a worker's actors — hand "
                 f"messages over without cross-CPU wake-ups; a broker on one CPU does not "
                 f"poll-spin (its loop would hold the CPU its I/O thread needs). Not the "
                 f"default: on 2 cores it costs throughput ({g(ptp)} jobs/s periodic, "
                 f"{fmt_ratio(r_tp)} of the unpinned run).")
        L.append("")
        L.append("| target (periodic, one core per process) | measured (median) | met |")
        L.append("|---|---|---|")
        tgt("round trip p50 ≤ 300 µs", prt, prt <= 300, f"{g(prt)} µs")
        tgt("chain of 3 p50 ≤ 600 µs", pch, pch is not None and pch <= 600, f"{g(pch)} µs")
        tgt("parallel of 3 p50 ≤ 450 µs", ppa, ppa is not None and ppa <= 450, f"{g(ppa)} µs")
        tgt("session create → execute → stop p50 ≤ 500 µs", pse, pse is not None and pse <= 500,
            f"{g(pse)} µs")
        L.append("")

    # --- workloads
    L.append("## Results")
    L.append("")
    L.append("Every cell: median [min–max] over the runs. Ratios are computed run by run (am2z run i ÷ "
             "the other's run i, which ran right after it) and summarised the same way. For latencies "
             "a ratio below 1 means am2z is faster; for throughput, above 1. am2z periodic and sync "
             "are both compared with BullMQ on Redis AOF `appendfsync everysec` (the durable "
             "configuration; note that sync is the stronger guarantee) and with Redis persistence off.")
    L.append("")
    L.append(f"### 1. Sequential round trip — `increment`, ~100 B state, {sz['rounds']:,} times")
    L.append("")
    latency_table(d, "rt", "rt", L)
    L.append("")
    L.append(f"### 2. Throughput — {sz['jobs']:,} jobs pipelined, ≤ {m['window']:,} in flight")
    L.append("")
    rate_table(d, "tp", "tp", L)
    L.append("")
    ctx = []
    for c in ("periodic", "sync", "periodic-c16", "sync-c16"):
        per = summary(((r["ctxsw_broker"] + r["ctxsw_worker"]) / r["result"]["jobs"])
                      for r in d.rows if r["system"] == "am2z" and r["config"] == c
                      and r["case"] == "tp" and "ctxsw_broker" in r)
        if per:
            ctx.append(f"{c}: {per[0]:.2f} [{per[1]:.2f}–{per[2]:.2f}]")
    if ctx:
        L.append("Context switches (voluntary + involuntary, all threads of broker + worker) per job: "
                 + "; ".join(ctx) + ".")
        L.append("")
    cpu = []
    for c in ("periodic", "sync", "periodic-c16", "sync-c16"):
        rows = [r for r in d.rows if r["system"] == "am2z" and r["config"] == c
                and r["case"] == "tp" and "cpu_broker_us" in r]
        parts = []
        for label, f in (("broker", lambda r: r["cpu_broker_us"] / r["result"]["jobs"]),
                         ("worker", lambda r: r["cpu_worker_us"] / r["result"]["jobs"]),
                         ("client", lambda r: r["result"].get("client_cpu_us_per_job"))):
            s_ = summary(v for v in (f(r) for r in rows) if v is not None)
            if s_:
                parts.append(f"{label} {s_[0]:.1f} [{s_[1]:.1f}–{s_[2]:.1f}]")
        if parts:
            cpu.append(f"{c}: " + ", ".join(parts))
    if cpu:
        tp_runs = [r for r in d.rows if r["system"] == "am2z" and r["case"] == "tp"
                   and "cpu_broker_us" in r]
        until_figure = bool(tp_runs) and all(r.get("cpu_until_figure") for r in tp_runs)
        window = ("/proc/PID/stat from the client's start until it printed its figure, so they "
                  "include its set-up but not its 1,000 closing stop_session calls"
                  if until_figure else
                  "/proc/PID/stat around the whole client run, so they include its set-up and its "
                  "1,000 closing stop_session calls")
        L.append("CPU time per job (user + system, all threads, µs; broker and worker from "
                 + window + "; the client's own from getrusage around the "
                 "pipelined jobs): " + "; ".join(cpu)
                 + ". On 2 cores the three together bound the throughput.")
        L.append("")
    L.append("### 3. Chain of 3 and parallel of 3")
    L.append("")
    nf = sz.get("rounds_flow")
    L.append(f"Distributed: {nf:,} sequential executions each of the example worker's `chain3` "
             "(`increment` three times in a row) and `par3` (three `increment` branches at once, "
             "three-way merged), run by the broker as durable workflow runs (every step leased to "
             "the worker, run records in LMDB). BullMQ: a FlowProducer flow on queue `flow` — "
             "chain3 = three nested jobs, each incrementing its child's result; par3 = three "
             "`increment` children under a `merge` parent (BullMQ's way to join branches), timed "
             "from `flowProducer.add` to the top job finished." if nf else
             "Distributed chain / parallel: not in these results (older run).")
    L.append("")
    for label, case in (("chain of 3", "chain3"), ("parallel of 3", "par3")):
        if configs(d, case):
            L.append(f"**{label}**")
            L.append("")
            latency_table(d, case, "rt", L)
            L.append("")
    L.append("Local runtime (`am2z_local`, in-process, composites of 3 × `increment`; "
             "parallel = three-way merge):")
    L.append("")
    L.append("| composite | p50 µs | p99 µs |")
    L.append("|---|---|---|")
    for label, case in (("single `increment`", "local"), ("chain of 3", "local-chain3"),
                        ("parallel of 3", "local-par3")):
        L.append(f"| {label} | {fmt_us(summary(d.series('am2z', 'local', case, 'p50_us').values()))} | "
                 f"{fmt_us(summary(d.series('am2z', 'local', case, 'p99_us').values()))} |")
    L.append("")
    L.append(f"### 4. New session → execute → stop_session — {sz['cycles']:,} cycles")
    L.append("")
    L.append("am2z: a fresh session id, `execute(increment)` with a ~100 B state, "
             "`stop_session` (state deleted). BullMQ: AM2Z's DistributedRuntime lifecycle — a "
             "queue, QueueEvents and a worker (concurrency 100, in the worker process) per session, "
             "one job, then close the worker and obliterate the queue. The floor column compares "
             "with one bare round trip (a cycle is at least two).")
    L.append("")
    latency_table(d, "session", "rt", L)
    L.append("")
    L.append("### 5. Local (in-process) runtime execute")
    L.append("")
    lp50 = summary(d.series("am2z", "local", "local", "p50_us").values())
    lp99 = summary(d.series("am2z", "local", "local", "p99_us").values())
    ep50 = d.series("am2z", "embedded", "embedded", "p50_us")
    ep99 = d.series("am2z", "embedded", "embedded", "p99_us")
    L.append(f"{sz['rounds']:,} sequential executions of `increment`, ~100 B state, one session:")
    L.append("")
    L.append("| runtime | p50 µs | p99 µs | p50 ÷ am2z distributed (periodic) |")
    L.append("|---|---|---|---|")
    L.append(f"| embedded (`am2z_runtime.h`: broker + worker threads over `inproc://`, LMDB, periodic) | "
             f"{fmt_us(summary(ep50.values()))} | {fmt_us(summary(ep99.values()))} | "
             f"{fmt_ratio(pair_ratio(ep50, d.series('am2z', 'periodic', 'rt', 'p50_us')))} |")
    L.append(f"| local (`am2z_local.h`: direct call in the calling thread, no broker, no LMDB) | "
             f"{fmt_us(lp50)} | {fmt_us(lp99)} | — |")
    L.append("")
    L.append("(µs resolution: the local figures are at the clock's grain.)")
    L.append("")
    L.append("### 6. Peak RSS during workload 2 (VmHWM, MiB)")
    L.append("")
    L.append("| system | broker / Redis | worker | sum |")
    L.append("|---|---|---|---|")
    for sysname, cfg in configs(d, "tp"):
        if sysname == "floor":
            continue
        b = summary(d.series(sysname, cfg, "tp", lambda r: r.get("rss_broker_kb")).values())
        w = summary(d.series(sysname, cfg, "tp", lambda r: r.get("rss_worker_kb")).values())
        t = summary(d.series(sysname, cfg, "tp", rss_total).values())
        L.append(f"| {SYS_LABEL[(sysname, cfg)]} | {fmt_mib(b)} | {fmt_mib(w)} | {fmt_mib(t)} |")
    L.append("")
    L.append("Each case runs against a freshly started broker and worker (or Redis and Node worker), "
             "so VmHWM is the peak of that run alone (including its start-up).")
    split = []
    for cfg in ("periodic", "sync", "periodic-c16", "sync-c16"):
        parts = [summary(d.series("am2z", cfg, "tp", lambda r, k=k: r.get(k)).values())
                 for k in ("anon_broker_kb", "file_broker_kb", "anon_worker_kb", "file_worker_kb",
                           "threads_worker")]
        if all(parts):
            split.append(f"{cfg}: broker heap (RssAnon) {parts[0][0] / 1024:.1f} MiB + mapped files "
                         f"(RssFile: LMDB pages, libraries) {parts[1][0] / 1024:.1f} MiB; worker heap "
                         f"{parts[2][0] / 1024:.1f} MiB + files {parts[3][0] / 1024:.1f} MiB, "
                         f"{parts[4][0]:.0f} threads")
    if split:
        L.append("")
        L.append("At the end of the run (medians) — " + "; ".join(split) + ".")
    L.append("")
    L.append("### 7. Larger states (durability periodic)")
    L.append("")
    L.append("| state | round trip p50 µs | p99 µs | p50 ÷ floor | jobs/s | ÷ floor | broker + worker RSS MiB |")
    L.append("|---|---|---|---|---|---|---|")
    for label, sfx in (("~100 B", ""), ("4 KiB", "-4k"), ("64 KiB", "-64k")):
        p50 = d.series("am2z", "periodic", "rt" + sfx, "p50_us")
        p99 = d.series("am2z", "periodic", "rt" + sfx, "p99_us")
        tp = d.series("am2z", "periodic", "tp" + sfx, "jobs_per_s")
        rs = d.series("am2z", "periodic", "tp" + sfx, rss_total)
        L.append(f"| {label} | {fmt_us(summary(p50.values()))} | {fmt_us(summary(p99.values()))} | "
                 f"{fmt_ratio(pair_ratio(p50, d.series('floor', 'none', 'rt' + sfx, 'p50_us')))} | "
                 f"{fmt_rate(summary(tp.values()))} | "
                 f"{fmt_ratio(pair_ratio(tp, d.series('floor', 'none', 'tp' + sfx, 'jobs_per_s')))} | "
                 f"{fmt_mib(summary(rs.values()))} |")
    L.append("")
    L.append("### 8. The floor: bare ZeroMQ DEALER → ROUTER/ROUTER → DEALER echo")
    L.append("")
    L.append("`bench/zmq_floor.c`: the same topology and payload size (client DEALER → broker "
             "ROUTER/ROUTER → worker DEALER echo, three processes), no codec, no store, no events. "
             "What the transport alone allows on this machine.")
    L.append("")
    L.append("| payload | round trip p50 µs | p99 µs | pipelined msgs/s |")
    L.append("|---|---|---|---|")
    for label, sfx in (("100 B", ""), ("4 KiB", "-4k"), ("64 KiB", "-64k")):
        L.append(f"| {label} | {fmt_us(summary(d.series('floor', 'none', 'rt' + sfx, 'p50_us').values()))} | "
                 f"{fmt_us(summary(d.series('floor', 'none', 'rt' + sfx, 'p99_us').values()))} | "
                 f"{fmt_rate(summary(d.series('floor', 'none', 'tp' + sfx, 'jobs_per_s').values()))} |")
    L.append("")

    if a.chart and chart(d, a.chart):
        L.append("## Chart")
        L.append("")
        L.append(f"![benchmarks]({os.path.basename(a.chart)})")
        L.append("")
        L.append("Bars: median; whiskers: min and max over the runs.")
        L.append("")

    L.append("## Where the time goes")
    L.append("")
    if a.profile and os.path.exists(a.profile):
        prof = json.load(open(a.profile))
    if prof:
        p = prof
        L.append(f"Measured by `bench/profile.sh` in this run ({p.get('jobs', 0):,} jobs, "
                 f"durability {p.get('durability', '?')}, under `perf stat` / `perf record`):")
        L.append("")
        L.append("| per job | broker | worker | client (am2z-bench) |")
        L.append("|---|---|---|---|")
        for k, label in (("syscalls", "syscalls"), ("ctxsw", "context switches"),
                         ("cpu_us", "CPU time µs (task-clock)")):
            L.append(f"| {label} | {p['broker'].get(k, 0):.1f} | {p['worker'].get(k, 0):.1f} | "
                     f"{p.get('client', {}).get(k, 0):.1f} |")
        if "bench" in p:
            L.append("")
            L.append(f"Throughput under perf: {p['bench'].get('jobs_per_s', 0):,.0f} jobs/s.")
        L.append("")
    if a.notes and os.path.exists(a.notes):
        with open(a.notes) as f:
            L.append(f.read().strip())
        L.append("")
    else:
        L.append("(no profile notes: see bench/profile.sh)")
        L.append("")

    L.append("## Method")
    L.append("")
    L.append("- One command: `bash bench/run.sh` (`--quick` for development, `--runs N`, "
             "`--no-peer`, `--profile`). It builds the C programs, starts every process itself on "
             "127.0.0.1 (ephemeral ports, fresh data directory / Redis per case), runs the cases in "
             "the order am2z, BullMQ, am2z, BullMQ … within each run, and writes this file and the chart.")
    L.append("- am2z: `am2z-broker` (LMDB in a fresh temp dir, `--durability periodic|sync`), one "
             "`am2z-example-worker`, and `am2z-bench --json` (bench/am2z_bench.c) as the client. "
             "Round trip = `am2z_client_execute` (SUBMIT → ACCEPTED → RESULT, events included), "
             "after 50 warm-up rounds. Throughput = `am2z_client_submit_many` in chunks of "
             "window/2 with `am2z_client_wait` for the results, timed from the first submit to "
             "the last result.")
    L.append("- BullMQ: `bench/peers/bullmq/bench.js`, one worker process (concurrency 100) and one "
             "client process against `redis-server` started by the harness (`--save ''`, "
             "`appendonly no`, or `appendonly yes` + `appendfsync everysec`). Round trip = "
             "`queue.add` + `job.waitUntilFinished(queueEvents)`; throughput = `addBulk` in chunks "
             "with the same window, completions counted from QueueEvents. Processor: "
             "`{...data, count: data.count + 1}` (am2z's `increment` also writes a short message). "
             "Both keep the newest 1,000 completed jobs: am2z's default `retain-completed`, "
             "BullMQ `removeOnComplete: 1000`.")
    L.append("- p50 / p99: per run, the 50th / 99th percentile of that run's samples; the table "
             "shows the median of those over the runs with [min–max].")
    L.append("- Peak RSS: `VmHWM` from /proc/PID/status right after the throughput run.")
    L.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
