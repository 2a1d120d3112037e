#!/usr/bin/env python3
"""Run prism and PyTorch/diffusers side by side on the same benchmarks; write a Markdown table.

Usage (from the repo root; build prism first with `cargo build --release`):

    /work/venv/bin/python tools/bench_compare.py                       # writes docs/performance.md + .json
    /work/venv/bin/python tools/bench_compare.py --only unet_b2_32,unet_b2_32_naive --force
    /work/venv/bin/python tools/bench_compare.py --quick --out /tmp/perf.md        # smoke test

For each benchmark name, in turn, it starts both systems side by side (paired mode, the
default):

    <python> tools/bench_torch.py --only NAME --threads T --runs N --paced [--quick] [--dtype D]
    <prism>  bench --only NAME --threads T --runs N --json --paced [--quick]

Each builds its model, warms up and prints "#pace ready"; from then on every timed run waits
for a line on its stdin. The script alternates them run by run (torch, prism, prism, torch,
...: who goes first flips every pair, with --gap seconds of quiet before each run), so a slow
spell of a noisy machine, which can last tens of seconds, hits both systems' runs of the same
pairs. The ratio column is the median over the N pairs of prism's time / torch's time: below 1
means prism is faster. Both processes are resident at once (a UNet at 64x64 latents: about
4.5 + 4 GiB; torch's Janus-Pro-1B language model and generation modules: about 6 GiB).

--mode rounds runs R rounds (--rounds, default 3) of one fresh process per system instead
(torch first in even rounds, prism first in odd ones), pools each system's R·N timed runs and
reports the ratio of the two medians.

Both print JSON of schema "prism.bench/1".  A benchmark prism does not support (non-zero
exit, or no result of that name) is recorded as missing, not fatal.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCHEMA = "prism.bench/1"
COMPARE_SCHEMA = "prism.bench-compare/1"
DEFAULT_PYTHON = Path("/work/venv/bin/python")

sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no tools/__pycache__
import bench_torch  # noqa: E402  (imports no torch at module level)


def log(msg: str) -> None:
    print(f"[bench_compare] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine

def machine_info() -> dict:
    info: dict = {"cpu_model": None, "logical_cpus": os.cpu_count()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cpus"] = None
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    phys = core = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and info["cpu_model"] is None:
                    info["cpu_model"] = val
                elif key == "flags" and not flags:
                    flags = set(val.split())
                elif key == "physical id":
                    phys = val
                elif key == "core id":
                    core = val
                    cores.add((phys or "0", core))
    except OSError:
        pass
    info["physical_cores"] = len(cores) or None
    info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
                    if f in flags]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    info["kernel"] = platform.release()
    info["hypervisor"] = "hypervisor" in flags
    return info


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_describe() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def prism_version(prism: Path) -> str | None:
    try:
        p = subprocess.run([str(prism), "--version"], capture_output=True, text=True, timeout=30)
        return p.stdout.strip() or None if p.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- running

def parse_json(stdout: str) -> dict | None:
    """The JSON document on stdout (tolerating stray lines before or after it)."""
    s = stdout.strip()
    for cand in (s, s[s.find("{"): s.rfind("}") + 1] if "{" in s else ""):
        if not cand:
            continue
        try:
            d = json.loads(cand)
            if isinstance(d, dict):
                return d
        except json.JSONDecodeError:
            pass
    return None


def tail(text: str, n: int = 600) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def run_system(system: str, cmd: list[str], name: str, env: dict, timeout: float | None,
               echo_stderr: bool) -> dict:
    """Run one benchmark process; return {status, reason?, result?, doc?, wall_s, command}."""
    rec: dict = {"command": cmd, "status": "missing"}
    log(f"{name}: {system}: {shlex.join(cmd)}")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                           cwd=str(REPO))
    except FileNotFoundError:
        rec["reason"] = f"{cmd[0]} not found"
        log(f"{name}: {system}: {rec['reason']}")
        return rec
    except subprocess.TimeoutExpired:
        rec.update(status="error", reason=f"timed out after {timeout} s")
        log(f"{name}: {system}: {rec['reason']}")
        return rec
    rec["wall_s"] = round(time.perf_counter() - t0, 3)
    return check_output(system, name, rec, p.returncode, p.stdout, p.stderr, echo_stderr)


def check_output(system: str, name: str, rec: dict, returncode: int, stdout: str, stderr: str,
                 echo_stderr: bool) -> dict:
    """Fill `rec` from a finished benchmark process: its JSON document and its result `name`."""
    rec["returncode"] = returncode
    if echo_stderr and stderr:
        sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")
    if returncode != 0:
        rec["reason"] = f"exit {returncode}: {tail(stderr or stdout, 300)}"
        log(f"{name}: {system}: missing ({rec['reason']})")
        return rec
    doc = parse_json(stdout)
    if doc is None:
        rec.update(status="error", reason="no JSON on stdout: " + tail(stdout, 300))
        log(f"{name}: {system}: {rec['reason']}")
        return rec
    rec["doc"] = doc
    if doc.get("schema") != SCHEMA:
        rec["warning"] = f"schema {doc.get('schema')!r}, expected {SCHEMA!r}"
    results = [r for r in doc.get("results", []) if isinstance(r, dict) and r.get("name") == name]
    if not results:
        rec["reason"] = "no result named " + name
        log(f"{name}: {system}: missing ({rec['reason']})")
        return rec
    r = results[0]
    try:
        float(r["median_s"]), float(r["min_s"]), float(r["max_s"])
    except (KeyError, TypeError, ValueError):
        rec.update(status="error", reason="result lacks median_s/min_s/max_s")
        return rec
    rec["status"] = "ok"
    rec["result"] = r
    log(f"{name}: {system}: median {r['median_s']:.4g} s [{r['min_s']:.4g}-{r['max_s']:.4g}]")
    return rec


# ----------------------------------------------------------------------------- paired runs

# What both benchmarkers print before each paced run (--paced; prism_analyze::bench::PACE_READY).
PACE_READY = bench_torch.PACE_READY


def start_paced(system: str, cmd: list[str], name: str, env: dict) -> dict:
    """Start a paced benchmark process (setup and warm-up) and wait until it is ready for its
    first timed run. The record holds the process while it lives."""
    rec: dict = {"command": cmd, "status": "missing", "out": [], "ready": False}
    log(f"{name}: {system}: {shlex.join(cmd)}")
    rec["t0"] = time.perf_counter()
    rec["errf"] = tempfile.TemporaryFile(mode="w+")  # a file, so a chatty stderr cannot block it
    try:
        rec["proc"] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=rec["errf"], text=True, bufsize=1, env=env,
                                       cwd=str(REPO))
    except FileNotFoundError:
        rec.pop("errf").close()
        for key in ("out", "t0", "ready"):
            rec.pop(key)
        rec["reason"] = f"{cmd[0]} not found"
        log(f"{name}: {system}: {rec['reason']}")
        return rec
    rec["ready"] = wait_ready(rec)
    return rec


def wait_ready(rec: dict) -> bool:
    """Read a paced process's stdout up to its next ready line (True) or its end (False): either
    way the run it was running is over."""
    for line in rec["proc"].stdout:
        if line.strip() == PACE_READY:
            return True
        rec["out"].append(line)
    return False


def go(rec: dict) -> None:
    """Let a ready paced process run once and wait until that run is over."""
    try:
        rec["proc"].stdin.write("go\n")
        rec["proc"].stdin.flush()
    except (BrokenPipeError, OSError):
        rec["ready"] = False
        return
    rec["ready"] = wait_ready(rec)


def finish_paced(system: str, name: str, rec: dict, timeout: float | None, echo_stderr: bool) -> dict:
    """Close a paced process's stdin (no more runs), collect its output and check it."""
    if "proc" not in rec:
        return rec
    p = rec.pop("proc")
    try:
        rest, _ = p.communicate(timeout=timeout)  # closes stdin first: no more runs
    except subprocess.TimeoutExpired:
        p.kill()
        rest, _ = p.communicate()
        rec["status"] = "error"
        rec["reason"] = f"timed out after {timeout} s"
    errf = rec.pop("errf")
    errf.seek(0)
    stderr = errf.read()
    errf.close()
    stdout = "".join(rec.pop("out")) + (rest or "")
    rec.pop("ready", None)
    rec["wall_s"] = round(time.perf_counter() - rec.pop("t0"), 3)
    if rec["status"] == "error":
        log(f"{name}: {system}: {rec['reason']}")
        return rec
    return check_output(system, name, rec, p.returncode, stdout, stderr, echo_stderr)


def run_paired(names: dict[str, str | None], cmds: dict[str, list[str]], env: dict, pairs: int,
               gap: float, timeout: float | None, echo_stderr: bool,
               skip: dict[str, str]) -> dict[str, dict]:
    """Both systems' processes side by side, each set up and warmed up, then their timed runs
    alternated: torch, prism, prism, torch, torch, ... (who goes first flips every pair), with
    `gap` seconds of quiet before each run (the other side's idle threads stop spinning). A
    slow spell of the machine then hits both systems' runs of the same pairs."""
    recs: dict[str, dict] = {}
    for sysname in ("torch", "prism"):
        if names[sysname] is None:
            recs[sysname] = {"status": "missing", "reason": skip[sysname]}
        else:
            recs[sysname] = start_paced(sysname, cmds[sysname], names[sysname], env)
    for i in range(pairs):
        order = ("torch", "prism") if i % 2 == 0 else ("prism", "torch")
        for sysname in order:
            if recs[sysname].get("ready"):
                time.sleep(gap)
                go(recs[sysname])
    return {s: (finish_paced(s, names[s], recs[s], timeout, echo_stderr) if names[s] else recs[s])
            for s in ("torch", "prism")}


def pool_rounds(recs: list[dict]) -> dict:
    """One record for a system from its rounds: the first failure if any round failed, else the
    first round's record with median/min/max over every timed run of every round (the round
    medians' median where a process did not list its runs)."""
    for rec in recs:
        if rec.get("status") != "ok":
            if len(recs) > 1:
                rec = dict(rec, reason=f"round {recs.index(rec) + 1} of {len(recs)}: {rec.get('reason', '')}")
            return rec
    if len(recs) == 1:
        return recs[0]
    times: list[float] = []
    for rec in recs:
        ts = rec["result"].get("times_s")
        if not isinstance(ts, list) or not ts:
            times = []
            break
        times += [float(t) for t in ts]
    medians = [float(r["result"]["median_s"]) for r in recs]
    pooled = sorted(times) if times else sorted(medians)
    result = dict(recs[0]["result"])
    result.update(
        median_s=pooled[len(pooled) // 2],
        min_s=min(float(r["result"]["min_s"]) for r in recs),
        max_s=max(float(r["result"]["max_s"]) for r in recs),
        runs=sum(int(r["result"].get("runs") or 0) for r in recs),
        round_medians_s=medians,
    )
    if times:
        result["times_s"] = times
    rec = dict(recs[0], result=result)
    rec["wall_s"] = round(sum(r.get("wall_s", 0.0) for r in recs), 3)
    rec["rounds"] = [{"command": r["command"], "wall_s": r.get("wall_s"), "median_s": r["result"]["median_s"]}
                     for r in recs]
    return rec


def torch_name_for(name: str) -> str | None:
    """The torch benchmark a name is compared with: itself, or for a prism kernel variant such as
    conv3x3_320_64_b2_im2col the base benchmark it extends (conv3x3_320_64_b2)."""
    known = bench_torch.all_names()
    if name in known:
        return name
    bases = [b for b in bench_torch.BENCHMARKS if b not in bench_torch.UNET_NAMES and name.startswith(b + "_")]
    return max(bases, key=len) if bases else None


# ----------------------------------------------------------------------------- report

def fmt_s(x: float) -> str:
    """Seconds to 3 significant digits, no exponent."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, 2 - math.floor(math.log10(x)))
    return f"{x:.{decimals}f}"


def cell(rec: dict) -> str:
    if rec.get("status") != "ok":
        why = rec.get("reason", rec.get("status", "missing"))
        short = why.split(":")[0] if why else "missing"
        return f"{rec.get('status', 'missing')} ({short})"
    r = rec["result"]
    return f"{fmt_s(r['median_s'])} [{fmt_s(r['min_s'])}–{fmt_s(r['max_s'])}]"


def rss_mib(rec: dict) -> str:
    if rec.get("status") != "ok":
        return "–"
    r = rec["result"]
    v = r.get("peak_rss_bytes", (rec.get("doc") or {}).get("peak_rss_bytes"))
    return f"{v / 2**20:,.0f}" if isinstance(v, (int, float)) else "–"


def models_line(report: dict) -> str:
    """The torch side's models for the Setup list: the presets the report's benchmarks use."""
    kinds = {bench_torch.BENCHMARKS[bench_torch.resolve(b["torch_name"])[0]][0]
             for b in report["benchmarks"] if b.get("torch_name")}
    parts = []
    janus, amused = {"janus_prefill", "janus_decode"}, {"amused_step", "amused_vq"}
    pixart = {"pixart_step", "t5_encode"}
    if not kinds.issubset(janus | amused | pixart):
        parts.append("SD 1.5 architecture from `crates/prism-models/presets/sd15/`")
    if kinds & amused:
        parts.append("aMUSEd `UVit2DModel` and `VQModel` from `crates/prism-models/presets/amused-256/` "
                     "and `amused-512/`" + (" (2 transformer layers with --quick)" if report["quick"] else ""))
    if kinds & {"janus_prefill", "janus_decode"}:
        parts.append("Janus-Pro-1B language model (transformers `LlamaModel`) and generation embeddings, "
                     "aligner and head from `crates/prism-models/presets/janus-pro-1b/`"
                     + (f" ({bench_torch.JANUS_QUICK_LAYERS} layers with --quick)" if report["quick"] else ""))
    if "pixart_step" in kinds:
        parts.append("PixArt-α 512 transformer (`presets/pixart-alpha-512/`)"
                     + (f", {bench_torch.PIXART_QUICK_LAYERS} of 28 layers with --quick" if report["quick"] else ""))
    if "t5_encode" in kinds:
        parts.append(f"T5 v1.1 XXL encoder, {bench_torch.T5_LAYERS} of 24 layers"
                     + (f" ({bench_torch.T5_QUICK_LAYERS} with --quick)" if report["quick"] else "")
                     + ", from `presets/pixart-alpha-512/text_encoder.json`")
    return "; ".join(parts)


def render_md(report: dict) -> str:
    m = report["machine"]
    tv = report.get("torch_versions") or {}
    lines = ["# Performance: prism vs PyTorch / diffusers", ""]
    if report["quick"]:
        lines += ["> **QUICK smoke test** (tiny sizes, 1 run): checks the scripts, measures nothing.", ""]
    if report.get("mode") == "paired":
        lines += [
            f"Generated by `tools/bench_compare.py` on {report['date']}, paired mode. For each benchmark",
            "both systems' processes are started side by side; each builds its model and warms up, then",
            f"their {report['runs']} timed runs alternate one by one (torch, prism, prism, torch, …: who goes",
            f"first flips every pair), with {report.get('gap_s')} s of quiet before each run, so a slow spell",
            "of a noisy machine hits both systems' runs of the same pairs. Times are seconds: median",
            "[min–max] of the timed runs. **prism/torch** is the median over the pairs of prism's time /",
            "torch's time, [min–max] over the pairs: below 1 means prism is faster (the ratio of the two",
            "medians is in the JSON, `ratio_of_medians`). GFLOP/s = FLOPs counted by",
            "torch.utils.flop_counter (2 per multiply-add) / median, the same count for both systems.",
            "",
        ]
    else:
        lines += [
            f"Generated by `tools/bench_compare.py` on {report['date']}. Both systems run the same benchmark",
            f"in {report.get('rounds', 1)} round(s), each a fresh process per system (torch first in even rounds,",
            "prism first in odd ones), before the next benchmark starts, so a slow spell of a noisy machine",
            "hits both. Times are seconds: median [min–max] over the timed runs of every round, after each",
            "process's warm-up. **prism/torch** is the ratio of medians: below 1 means prism is faster.",
            "GFLOP/s = FLOPs counted by torch.utils.flop_counter (2 per multiply-add) / median, the same",
            "count for both systems.",
            "",
        ]
    lines += [
        "| benchmark | torch median [min–max] s | prism median [min–max] s | prism/torch | torch GFLOP/s | prism GFLOP/s | peak RSS torch / prism (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in report["benchmarks"]:
        t, p = b["torch"], b["prism"]
        ratio = f"{b['ratio']:.2f}" if b.get("ratio") is not None else "–"
        if b.get("pair_ratios"):
            ratio += f" [{min(b['pair_ratios']):.2f}–{max(b['pair_ratios']):.2f}]"
        flops = b.get("flops")
        tg = f"{flops / t['result']['median_s'] / 1e9:.1f}" if flops and t.get("status") == "ok" else "–"
        pg = f"{flops / p['result']['median_s'] / 1e9:.1f}" if flops and p.get("status") == "ok" else "–"
        label = f"`{b['name']}`"
        if b.get("torch_name") not in (None, b["name"]):
            label += f" (torch: `{b['torch_name']}`)"
        lines.append(f"| {label} | {cell(t)} | {cell(p)} | {ratio} | {tg} | {pg} | "
                     f"{rss_mib(t)} / {rss_mib(p)} |")
    lines.append("")
    notes = [f"- `{b['name']}`: {sysname} {b[sysname]['status']}: {b[sysname].get('reason', '')}"
             for b in report["benchmarks"] for sysname in ("torch", "prism")
             if b[sysname].get("status") != "ok"]
    notes += [f"- `{b['name']}`: {w}" for b in report["benchmarks"] for w in b.get("warnings", [])]
    for b in report["benchmarks"]:
        r = b["prism"].get("result") or {}
        extra = [str(r["note"])] if r.get("note") else []
        if isinstance(r.get("rel_error"), (int, float)):
            extra.append(f"rel. error {r['rel_error']:.2e}")
        if extra:
            notes.append(f"- `{b['name']}`: prism: {'; '.join(extra)}")
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    cores = m.get("physical_cores")
    lines += [
        "## Setup",
        "",
        f"- Machine: {m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs"
        + (f" ({cores} cores)" if cores else "")
        + (f", {m['usable_cpus']} usable" if m.get("usable_cpus") not in (None, m.get("logical_cpus")) else "")
        + (f", {m['mem_total_gib']} GiB" if m.get("mem_total_gib") else "")
        + (f"; {', '.join(m['simd'])}" if m.get("simd") else "")
        + ("; virtual machine" if m.get("hypervisor") else "")
        + f"; Linux {m.get('kernel')}",
        f"- Load average at start / end: {report.get('loadavg_start')} / {report.get('loadavg_end')}",
        f"- Threads: {report['threads']} per system; timed runs: "
        + (f"{report['runs']} pairs" if report.get("mode") == "paired"
           else f"{report.get('rounds', 1)} round(s) × {report['runs']}")
        + f", after {report['warmup']} warm-up (torch; prism's own warm-up); dtype {report['dtype']}",
        "- torch side: " + ", ".join(f"{k} {v}" for k, v in tv.items() if v)
        + "; models: " + models_line(report) + ", random weights",
        f"- prism: {report.get('prism_version') or 'version unknown'} (`{report['prism']}`), "
        f"repo commit {report.get('git') or 'unknown'}",
        f"- Command (in `{report['cwd']}`): `{report['command']}`",
        f"- Raw results: `{report['json_name']}`",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads for both systems (default 2)")
    ap.add_argument("--runs", type=int, default=None,
                    help="timed runs per process: pairs in paired mode (default 9), per round in rounds "
                         "mode (default 3); 1 with --quick")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds mode: processes per system and benchmark, alternating which system goes "
                         "first; their runs are pooled (default 3; 1 with --quick)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs of the torch side (default 1)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="torch's dtype (default f32); prism bench times f32 math only, so with bf16 "
                         "its side is recorded as missing")
    ap.add_argument("--only", default=None,
                    help="comma-separated names (default: every base benchmark; add e.g. unet_b2_64_naive)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 run, for both systems: smoke test")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md",
                    help="Markdown report (default docs/performance.md); raw JSON goes next to it (.json)")
    ap.add_argument("--force", action="store_true", help="overwrite existing report files")
    ap.add_argument("--prism", type=Path, default=REPO / "target" / "release" / "prism",
                    help="prism binary (default target/release/prism)")
    ap.add_argument("--python", type=Path,
                    default=DEFAULT_PYTHON if DEFAULT_PYTHON.exists() else Path(sys.executable),
                    help=f"python of the torch venv (default {DEFAULT_PYTHON})")
    ap.add_argument("--mode", choices=["paired", "rounds"], default="paired",
                    help="paired (default): one process per system, side by side, timed runs alternated "
                         "one by one; rounds: R fresh processes per system in turn")
    ap.add_argument("--gap", type=float, default=0.5,
                    help="paired mode: seconds of quiet before each timed run (default 0.5)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per process (default none)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the subprocesses' stderr")
    args = ap.parse_args()

    names = ([s.strip() for s in args.only.split(",") if s.strip()] if args.only
             else list(bench_torch.BENCHMARKS))
    unmatched = [n for n in names if torch_name_for(n) is None]
    if unmatched:
        log(f"warning: no torch benchmark for {', '.join(unmatched)} (torch side recorded as missing); "
            f"torch knows {', '.join(bench_torch.all_names())}")
    paired = args.mode == "paired"
    if paired:
        if args.rounds not in (None, 1):
            ap.error("--rounds is for --mode rounds (paired mode runs one process per system)")
        runs = args.runs if args.runs is not None else (1 if args.quick else 9)
        rounds = 1
    else:
        runs = args.runs if args.runs is not None else (1 if args.quick else 3)
        rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if args.gap < 0:
        ap.error("--gap must be >= 0")
    if runs < 1 or rounds < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--runs, --rounds and --threads must be >= 1, --warmup >= 0")

    out_md = args.out if args.out.suffix == ".md" else args.out.with_suffix(args.out.suffix + ".md")
    out_json = out_md.with_suffix(".json")
    existing = [str(p) for p in (out_md, out_json) if p.exists()]
    if existing and not args.force:
        ap.error(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    prism = args.prism.resolve() if args.prism.exists() else args.prism
    if not args.prism.exists():
        log(f"warning: {args.prism} not found (cargo build --release?); every prism result will be missing")

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["MKL_NUM_THREADS"] = str(args.threads)
    common = ["--only", "{name}", "--threads", str(args.threads), "--runs", str(runs)]
    torch_cmd = [str(args.python), str(HERE / "bench_torch.py"), *common, "--warmup", str(args.warmup)]
    prism_cmd = [str(prism), "bench", *common, "--json"]
    if args.quick:
        torch_cmd.append("--quick")
        prism_cmd.append("--quick")
    if paired:
        torch_cmd.append("--paced")
        prism_cmd.append("--paced")
    torch_cmd += ["--dtype", args.dtype]
    # prism's 16-bit mode keeps weights in 16 bits with f32 math: not torch's bf16 run.
    prism_skip = None if args.dtype == "f32" else "prism bench times f32 math only"

    report: dict = {
        "schema": COMPARE_SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "cwd": os.getcwd(),
        "machine": machine_info(),
        "threads": args.threads,
        "mode": args.mode,
        "gap_s": args.gap if paired else None,
        "runs": runs,
        "rounds": rounds,
        "warmup": args.warmup,
        "dtype": args.dtype,
        "quick": bool(args.quick),
        "prism": str(prism),
        "prism_version": prism_version(prism),
        "git": git_describe(),
        "json_name": out_json.name,
        "loadavg_start": loadavg(),
        "benchmarks": [],
    }
    log(f"{len(names)} benchmark(s), threads {args.threads}, {rounds} round(s) of {runs} run(s), {args.dtype}"
        f"{', QUICK' if args.quick else ''}; load {report['loadavg_start']}")

    for name in names:
        tname = torch_name_for(name)
        b: dict = {"name": name, "torch_name": tname, "loadavg": loadavg(), "warnings": []}
        sub = lambda cmd, n: [n if a == "{name}" else a for a in cmd]  # noqa: E731
        recs: dict[str, list[dict]] = {"torch": [], "prism": []}
        if paired:
            got = run_paired({"torch": tname, "prism": None if prism_skip else name},
                             {"torch": sub(torch_cmd, tname or ""), "prism": sub(prism_cmd, name)},
                             env, runs, args.gap, args.timeout, not args.quiet,
                             {"torch": "no such torch benchmark", "prism": prism_skip or ""})
            recs = {s_: [got[s_]] for s_ in ("torch", "prism")}
        for rnd in range(0 if paired else rounds):
            order = ("torch", "prism") if rnd % 2 == 0 else ("prism", "torch")
            for sysname in order:
                if sysname == "torch":
                    if tname is None:
                        recs["torch"].append({"status": "missing", "reason": "no such torch benchmark"})
                    else:
                        recs["torch"].append(run_system("torch", sub(torch_cmd, tname), tname, env,
                                                        args.timeout, not args.quiet))
                elif prism_skip:
                    recs["prism"].append({"status": "missing", "reason": prism_skip})
                else:
                    recs["prism"].append(run_system("prism", sub(prism_cmd, name), name, env,
                                                    args.timeout, not args.quiet))
        b["torch"], b["prism"] = pool_rounds(recs["torch"]), pool_rounds(recs["prism"])
        t, p = b["torch"], b["prism"]
        if t.get("doc") and report.get("torch_versions") is None:
            report["torch_versions"] = t["doc"].get("versions")
        flops = None
        for rec in (t, p):  # torch's FLOP count first; prism's if torch has none
            if rec.get("status") == "ok" and isinstance(rec["result"].get("flops"), (int, float)):
                flops = rec["result"]["flops"]
                break
        b["flops"] = flops
        if t.get("status") == "ok" and p.get("status") == "ok" and t["result"]["median_s"] > 0:
            b["ratio_of_medians"] = p["result"]["median_s"] / t["result"]["median_s"]
            b["ratio"] = b["ratio_of_medians"]
            tt, pt = t["result"].get("times_s"), p["result"].get("times_s")
            if paired and isinstance(tt, list) and isinstance(pt, list) and len(tt) == len(pt) and tt \
                    and min(tt) > 0:
                # Run i of each system ran in pair i: the median of the pairs' ratios.
                b["pairs"] = [[float(a), float(c)] for a, c in zip(tt, pt)]
                ratios = sorted(c / a for a, c in b["pairs"])
                b["pair_ratios"] = ratios
                b["ratio"] = statistics.median(ratios)
            elif paired:
                b["warnings"].append("the two systems timed different numbers of runs: ratio of medians")
        for sysname, rec in (("torch", t), ("prism", p)):
            doc = rec.get("doc") or {}
            if rec.get("warning"):
                b["warnings"].append(f"{sysname}: {rec['warning']}")
            if doc and doc.get("system") not in (None, sysname):
                b["warnings"].append(f"{sysname}: JSON says system {doc.get('system')!r}")
            if doc.get("threads") not in (None, args.threads):
                b["warnings"].append(f"{sysname} ran with {doc.get('threads')} threads")
            if doc.get("dtype") not in (None, args.dtype):
                b["warnings"].append(f"{sysname} ran in {doc.get('dtype')}")
            if "quick" in doc and bool(doc["quick"]) != bool(args.quick):
                b["warnings"].append(f"{sysname}: quick={doc['quick']}, sizes differ from the other side")
            if rec.get("status") == "ok" and rec["result"].get("runs") not in (None, runs * rounds):
                b["warnings"].append(f"{sysname} timed {rec['result'].get('runs')} runs")
        if b["flops"] and p.get("status") == "ok" and isinstance(p["result"].get("flops"), (int, float)) \
                and t.get("status") == "ok" and isinstance(t["result"].get("flops"), (int, float)):
            tf, pf = t["result"]["flops"], p["result"]["flops"]
            if tf and abs(pf - tf) > 0.01 * tf:
                b["warnings"].append(f"FLOP counts differ: torch {tf:,}, prism {pf:,}")
        report["benchmarks"].append(b)
        if b.get("ratio") is not None:
            log(f"{name}: prism/torch {b['ratio']:.2f}")

    report["loadavg_end"] = loadavg()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    md_text = render_md(report)
    out_json.write_text(json.dumps(report, indent=1) + "\n")
    out_md.write_text(md_text)
    sys.stdout.write(md_text)
    log(f"wrote {out_md} and {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
