"""Bench configs on a borrowed GPU: their cells spread over worker processes, as one deadline-bounded session.

Usage (on the GPU machine; the packaged task data, no data folder needed):
    python scripts/gpu_bench.py run --out DIR [--deadline 470] [--workers 14] CONFIG[:TASKS[:SEEDS[:LABELS]]] ...
Here, afterwards (no GPU needed):
    python scripts/gpu_bench.py collect DIR/parts.tar.gz [--into benchmarks/results]

``run`` splits each config (narrowed like ``edgetune bench --tasks/--seeds/--methods``; comma-separated
lists, an empty field means all) into jobs: one per cell for the input-edge methods (the slow ones), one
per (task, label) for the others (all seeds in one process: they take seconds). Jobs run in the order the
configs are given, each as ``python -m edgetune bench CONFIG -o PARTS/<config>/<job> --tasks T --seeds S
--methods L`` in its own process (one thread each; a 135M model leaves a GPU idle between kernel launches,
so processes share it). At the deadline the running jobs are killed: the cells they finished are kept (the
runner writes each cell as it ends), the rest is listed in ``session.log`` — never padded.
``DIR/parts.tar.gz`` holds every part.

``collect`` merges the parts of each config into ``<config output>_gpu/results.jsonl`` (under ``--into``,
default the config's own folder's parent) and renders its report with ``edgetune bench --report``. Wall times
were measured with several processes sharing the GPU: they are inflated, and say so in the report's notes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "benchmarks"
ROOT = HERE.parent


def jobs_of(spec: str) -> list[tuple[str, list[str]]]:
    """(name, ``edgetune bench`` arguments) for each job of ``CONFIG[:TASKS[:SEEDS[:LABELS]]]``."""
    from edgetune.bench import BenchConfig
    from edgetune.methods import get_method

    path, *rest = spec.split(":")
    fields = [[x for x in f.split(",") if x] or None for f in rest] + [None] * (3 - len(rest))
    tasks, seeds, labels = fields[:3]
    config = BenchConfig.from_yaml(path).narrowed(tasks, [int(s) for s in seeds] if seeds else None, labels)
    out: list[tuple[str, list[str]]] = []
    slow: list[tuple[tuple[int, str], tuple[str, list[str]]]] = []
    for entry in config.methods:
        slow_method = get_method(entry.name).edge == "input"
        for task in config.tasks:
            t = str(task)
            base = [path, "--tasks", t, "--methods", entry.label]
            if slow_method:
                slow += [((s, t), (f"{config.name}/{t}_{s}_{entry.label}", [*base, "--seeds", str(s)]))
                         for s in config.seeds]
            else:
                out.append((f"{config.name}/{t}_{entry.label}", [*base, "--seeds", *map(str, config.seeds)]))
    # seed by seed (every task and method of seed 0 first): a deadline leaves whole seeds, not whole methods
    order = [str(t) for t in config.tasks]
    return out + [job for _, job in sorted(slow, key=lambda x: (x[0][0], order.index(x[0][1])))]


def session_logger(out: Path, start: float) -> Callable[[str], None]:
    """A function that prints a line stamped with the seconds since ``start`` and appends it to
    ``out``/session.log."""

    def say(msg: str) -> None:
        line = f"[{time.time() - start:6.1f}s] {msg}"
        print(line, flush=True)
        with open(out / "session.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    return say


def run_queue(jobs: list[tuple[str, list[str], Path]], workers: int, deadline: float,
              say: Callable[[str], None]) -> list[str]:
    """Run (name, command, log file) jobs in order, ``workers`` at a time, each process on one thread; at the
    ``deadline`` (a ``time.time()`` value) kill what runs and start nothing more. Returns the failed names."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    queue = list(jobs)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: list[str] = []
    while queue or running:
        while queue and len(running) < workers:
            name, cmd, log = queue.pop(0)
            with open(log, "w") as logf:  # the child keeps its own handle
                running[name] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env), time.time())
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    failed.append(name)
                say(f"{'done' if not proc.returncode else 'FAILED'} {name} in {time.time() - t0:.0f}s "
                    f"({len(queue)} queued, {len(running)} running)")
        if time.time() > deadline:
            say(f"deadline: killed {sorted(running)}; never started: {[n for n, _, _ in queue]}")
            for proc, _ in running.values():
                proc.kill()
            break
        time.sleep(0.5)
    return failed


def run(args: argparse.Namespace) -> None:
    out, parts = Path(args.out), Path(args.parts)
    out.mkdir(parents=True, exist_ok=True)
    parts.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def say(msg: str) -> None:
        line = f"[{time.time() - start:6.1f}s] {msg}"
        print(line, flush=True)
        with open(out / "session.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    from edgetune.backends import resolve_model
    from edgetune.bench.records import machine_info

    resolve_model(args.model)  # convert the GGUF once here, not in every worker at once
    say(f"machine {machine_info()}")
    queue = list({name: (name, a) for spec in args.specs for name, a in jobs_of(spec)}.values())  # once each
    say(f"{len(queue)} jobs, {args.workers} workers, deadline {args.deadline:.0f}s")
    jobs = []
    for name, bench_args in queue:
        folder = parts / name
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((name, [sys.executable, "-m", "edgetune", "bench", *bench_args, "-o", str(folder), "--no-plots",
                            "--no-progress"], folder / "log.txt"))
    failed = run_queue(jobs, args.workers, start + args.deadline, say)
    say(f"failed: {failed}")
    with tarfile.open(out / "parts.tar.gz", "w:gz") as tar:
        tar.add(parts, arcname="parts", filter=lambda info: None if "features.sqlite" in info.name else info)
    say("packed parts.tar.gz")


def collect(args: argparse.Namespace) -> None:
    import tempfile

    from edgetune.bench import BenchConfig

    configs = {c.name: c for c in map(BenchConfig.from_yaml, HERE.glob("*.yaml"))}
    work = Path(tempfile.mkdtemp())
    for archive in args.archives:
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
    for config_dir in sorted(p for p in (work / "parts").iterdir() if p.is_dir()):
        lines: list[str] = []
        for part in sorted(config_dir.glob("*/results.jsonl")):
            lines += [x for x in part.read_text(encoding="utf-8").splitlines() if x.strip()]
        config = configs.get(config_dir.name)
        stem = Path(config.output).name if config and config.output else config_dir.name
        target = Path(args.into) / f"{stem}_gpu"
        target.mkdir(parents=True, exist_ok=True)
        (target / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        subprocess.run([sys.executable, "-m", "edgetune", "bench", "--report", str(target / "results.jsonl")],
                       check=True)
        cells = sum(json.loads(x).get("type") == "cell" for x in lines)
        print(f"{config_dir.name}: {cells} cells -> {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("specs", nargs="+", metavar="CONFIG[:TASKS[:SEEDS[:LABELS]]]")
    r.add_argument("--out", required=True, help="folder for session.log and parts.tar.gz")
    r.add_argument("--parts", default="/tmp/edgetune_gpu_parts")
    r.add_argument("--deadline", type=float, default=470, help="seconds before running jobs are killed")
    r.add_argument("--workers", type=int, default=14)
    r.add_argument("--model", default="smollm2-135m")
    c = sub.add_parser("collect")
    c.add_argument("archives", nargs="+")
    c.add_argument("--into", default=str(HERE / "results"))
    args = ap.parse_args()
    {"run": run, "collect": collect}[args.command](args)


if __name__ == "__main__":
    main()
