"""Model as a service: DecT vs BBT, and DecT through the llama.cpp server vs in-process.

Usage:
  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/model_as_a_service.py --part bbt [--budget 40]
  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/model_as_a_service.py --part server

``--part bbt``: on the same 16-shot samples (seeds) and the same seeded test subset, DecT and BBT on the
in-process model. DecT's cost is measured with an empty cache (its training queries are real); its wall
time is extraction of the training (+ content-free) prompts plus decoder training. BBT's wall time is
its whole CMA-ES search (including its dev evaluations). Test-set inference is excluded for both.
Queries are forward passes over single samples.

``--part server``: DecT (and its baselines, same features) with the llama.cpp server on 127.0.0.1
(``edgetune.backends.server.LlamaServer``, the packaged Q4_1 GGUF, 2 threads) vs in-process (the same
GGUF de-quantised to fp32), each with an empty cache: queries, HTTP requests, wall time, accuracy.

Every evaluation is a cell of edgetune's one runner (``run_bench``): its records are kept in
``--out``/maas_<part>/ (results.jsonl; the server part keeps one per backend, as both answer to the same
model name), and the tables are made from them. Writes ``--out``/maas_<part>.{json,md} (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.backends import FeatureCache, OpenAIBackend, load_backend
from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench
from edgetune.bench.records import machine_info
from edgetune.bench.report import last_invocation, pct, summarise
from edgetune.data import Template, load_task
from edgetune.methods import display_name

RESULTS = Path(__file__).resolve().parents[1] / "results"


class _OnTop(FeatureCache):
    """An empty in-memory cache that also answers from ``base`` (a test set's features, extracted once per
    task): whatever is not in ``base`` (DecT's training and content-free prompts) is really queried."""

    def __init__(self, base: FeatureCache) -> None:
        super().__init__(None)
        self.base = base

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        found = self.base.get_many(keys)
        found.update(super().get_many([k for k in keys if k not in found]))
        return found


def bbt_config(name: str, model: str, shots: int, seed: int, test_size: int, budget: int,
               popsize: int) -> BenchConfig:
    """DecT and BBT (``budget`` calls, population ``popsize``) on one task's ``shots``-shot sample ``seed``."""
    return BenchConfig(name="maas_bbt", tasks=[name], models=[model], shots=[shots], seeds=[seed],
                       test_size=test_size, methods=[MethodEntry("dect", "dect"),
                                                     MethodEntry("bbt", "bbt", {"budget": budget, "popsize": popsize})])


def bbt_records(backend, name: str, shots: int, seed: int, test_size: int, budget: int, popsize: int,
                test_cache: FeatureCache | None = None, output: str | Path | None = None,
                fresh: bool = True) -> list[dict[str, Any]]:
    """Run DecT and BBT on one task's ``shots``-shot sample ``seed`` through ``run_bench``; return the lines of
    its results file (``output``/results.jsonl, a temporary folder by default).

    DecT's training (and content-free) prompts go to an empty cache, so its queries are real and its wall
    time is their extraction plus decoder training. The test set's features come from ``test_cache`` when
    given (extracted into it on first use, outside any method's time), else from the same empty cache.
    """
    if test_cache is not None:
        task = load_task(name)
        backend.cache = test_cache
        backend.features(task.load("test", limit=test_size, seed=0), Template(task.template), task.words,
                         f"{name} test")
        backend.cache = _OnTop(test_cache)
    else:
        backend.cache = FeatureCache(None)
    config = bbt_config(name, backend.name, shots, seed, test_size, budget, popsize)
    with tempfile.TemporaryDirectory() as tmp:
        path = run_bench(config, output=output if output is not None else tmp, progress=False,
                         backends={backend.name: backend}, cache=FeatureCache(None), fresh=fresh)
        return read_results(path)


def row_from_records(lines: list[dict[str, Any]], task: str | None = None, seed: int | None = None) -> dict:
    """The DecT-vs-BBT row of one (task, seed) from run_bench lines (the last DecT and BBT cells that match).

    ``dect.seconds`` is DecT's wall time (training + the extraction its queries took), ``bbt.seconds`` BBT's
    whole CMA-ES search (its dev evaluations included); test inference is excluded for both."""
    cells = {c["name"]: c for c in lines if c.get("type") == "cell" and (task is None or c["task"] == task)
             and (seed is None or c["seed"] == seed)}
    d, b = cells["dect"], cells["bbt"]
    training = b.get("training") or {}
    return {"task": d["task"], "seed": d["seed"], "n_train": d["n_train"], "n_test": d["n_test"],
            "dect": {"accuracy": d["accuracy"], "seconds": d["wall_seconds"], "queries": d["queries"]},
            "bbt": {"accuracy": b["accuracy"], "seconds": b["fit_seconds"], "calls": b["steps"],
                    "queries": b["queries"], "budget": b["params"]["budget"],
                    "seconds_per_call": b["fit_seconds"] / b["steps"], "final_loss": training.get("final_loss"),
                    "best_call": training.get("best_call"), "best_train_loss": training.get("best_train_loss"),
                    "dev_accuracy": training.get("dev_accuracy", [])}}


def bbt_row(backend, name: str, shots: int, seed: int, test_size: int, budget: int, popsize: int,
            test_cache: FeatureCache | None = None, output: str | Path | None = None, fresh: bool = True) -> dict:
    """DecT (empty cache: its queries are real) and BBT on one task's ``shots``-shot sample ``seed``, through
    ``run_bench`` (see :func:`bbt_records`); the row :func:`render_bbt` tabulates."""
    lines = bbt_records(backend, name, shots, seed, test_size, budget, popsize, test_cache, output, fresh)
    return row_from_records(lines, name, seed)


def render_bbt(rows: list[dict], meta: dict, stem: Path, note: str = "") -> str:
    """Write ``stem``.json (rows + how they were made) and ``stem``.md; return the Markdown."""
    budget = meta["bbt_budget"]
    (stem.with_suffix(".json")).write_text(json.dumps(meta | {"rows": rows}, indent=2), encoding="utf-8")
    lines = [f"# DecT vs BBT · {meta['model']} · {meta['shots']}-shot · seeds {meta['seeds']} · BBT budget "
             f"{budget} calls (reference default 8,000)", "", f"Machine: {json.dumps(meta['machine'])}", ""]
    if note:
        lines += [note, ""]
    lines += ["| task | DecT acc % | BBT acc % | DecT queries | BBT queries | DecT s | BBT s | BBT s/call | "
              "time ratio BBT/DecT | BBT at 8,000 calls (extrapolated) |", "|---" * 10 + "|"]
    for name in dict.fromkeys(x["task"] for x in rows):
        r = [x for x in rows if x["task"] == name]

        def ms(vals):
            return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

        da, ba = ms([x["dect"]["accuracy"] for x in r]), ms([x["bbt"]["accuracy"] for x in r])
        ds, bs = np.mean([x["dect"]["seconds"] for x in r]), np.mean([x["bbt"]["seconds"] for x in r])
        per_call = np.mean([x["bbt"]["seconds_per_call"] for x in r])
        extrapolated = ("measured" if budget >= 8000
                        else f"{8000 * per_call / 3600:.1f} h ({8000 * per_call / ds:,.0f}× DecT)")
        one = len(r) == 1  # a single seed has no spread to show

        lines.append(f"| {name} (n={r[0]['n_test']}, seeds {[x['seed'] for x in r]}) | "
                     f"{f'{100 * da[0]:.1f}' if one else pct(*da)} | {f'{100 * ba[0]:.1f}' if one else pct(*ba)} | "
                     f"{np.mean([x['dect']['queries'] for x in r]):.0f} | "
                     f"{np.mean([x['bbt']['queries'] for x in r]):,.0f} | {ds:.1f} | {bs:.0f} | {per_call:.3f} | "
                     f"{bs / ds:.0f}× | {extrapolated} |")
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    return text


def part_bbt(args: argparse.Namespace) -> None:
    out = Path(args.out)
    backend = load_backend(args.model, cache=FeatureCache(None), progress=False)
    rows = []
    fresh = True
    for name in args.tasks:
        test_cache = FeatureCache(None)
        for seed in args.seeds:
            row = bbt_row(backend, name, args.shots, seed, args.test_size, args.budget, args.popsize, test_cache,
                          output=out / "maas_bbt", fresh=fresh)
            fresh = False  # one results file for the whole part
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("task", "seed")} | {"dect": row["dect"],
                  "bbt": {k: row["bbt"][k] for k in ("accuracy", "seconds", "calls", "queries")}}), flush=True)
    meta = {"model": args.model, "shots": args.shots, "seeds": args.seeds, "test_size": args.test_size,
            "bbt_budget": args.budget, "bbt_popsize": args.popsize, "machine": machine_info(),
            "records": str(out / "maas_bbt" / "results.jsonl")}
    print(render_bbt(rows, meta, out / "maas_bbt"))


def server_row(lines: list[dict[str, Any]], label: str, wall: float) -> dict[str, Any]:
    """One (task, backend) row from the lines of its run_bench invocation: per method accuracy mean ± std over
    seeds, and what feature extraction cost (queries, seconds and the backend's counters, summed)."""
    summary = summarise(lines)
    (task, methods), = summary.items()
    stats: dict[str, int] = {}
    paid = [x for x in lines if x.get("type") == "extraction"]
    for x in paid:
        for k, v in (x.get("stats") or {}).items():
            if k != "queries":
                stats[k] = stats.get(k, 0) + v
    return {"task": task, "backend": label, "n_test": methods[0]["n_test"],
            "methods": {r["method"]: {k: r[k] for k in ("mean", "std", "fit_seconds", "n_seeds", "trainable_params")}
                        for r in methods},
            "extraction": {"queries": sum(x["queries"] for x in paid), "seconds": sum(x["seconds"] for x in paid),
                           "stats": stats},
            "wall_seconds": wall}


def part_server(args: argparse.Namespace) -> None:
    from edgetune.backends.server import LlamaServer

    out = Path(args.out)
    local = load_backend(args.model, progress=False, cache=FeatureCache(None))
    methods = ("zeroshot", "calibrated", "linear_probe", "dect")
    rows = []
    with LlamaServer(args.model, n_threads=args.threads, n_ctx=2048) as server:
        remote = OpenAIBackend(server.alias, server.base_url, cache=FeatureCache(None), top_logprobs=args.top_logprobs,
                               concurrency=args.concurrency, progress=False)
        for i, name in enumerate(args.tasks):
            # both backends answer to the same model name: one results file each
            for label, folder, backend in (("in-process", "in-process", local),
                                           ("llama.cpp server", "llama-cpp-server", remote)):
                backend.cache = FeatureCache(None)
                config = BenchConfig(name=f"maas_server ({label})", tasks=[name], models=[backend.name],
                                     shots=[args.shots], seeds=list(args.seeds), test_size=args.test_size,
                                     methods=[MethodEntry(m, m) for m in methods])
                t0 = time.perf_counter()
                path = run_bench(config, output=out / "maas_server" / folder, progress=False,
                                 backends={backend.name: backend}, cache=FeatureCache(None), fresh=i == 0)
                row = server_row(last_invocation(read_results(path)), label, time.perf_counter() - t0)
                rows.append(row)
                d, x = row["methods"]["dect"], row["extraction"]
                print(f"{name} {label}: DecT {pct(d['mean'], d['std'])} · queries {x['queries']} · "
                      f"{row['wall_seconds']:.0f} s · {x['stats']}", flush=True)
    meta = {"model": args.model, "shots": args.shots, "seeds": args.seeds, "test_size": args.test_size,
            "threads": args.threads, "top_logprobs": args.top_logprobs, "concurrency": args.concurrency,
            "machine": machine_info(), "records": str(out / "maas_server")}
    (out / "maas_server.json").write_text(json.dumps(meta | {"rows": rows}, indent=2), encoding="utf-8")
    lines = [f"# DecT through the llama.cpp server vs in-process · {args.model} · {args.shots}-shot · seeds "
             f"{args.seeds}", "", f"Machine: {json.dumps(meta['machine'])}",
             f"Server: llama-cpp-python 0.3.36, packaged Q4_1 GGUF, {args.threads} threads, top_logprobs "
             f"{args.top_logprobs}, concurrency {args.concurrency}. In-process: the same GGUF de-quantised to fp32.",
             "", "| task | backend | " + " | ".join(display_name(m) for m in methods) +
             " | queries | HTTP requests | prompt tokens | floored scores | extraction s | wall s |",
             "|---" * (len(methods) + 8) + "|"]
    for row in rows:
        s, x = row["methods"], row["extraction"]
        st = x["stats"]
        lines.append(f"| {row['task']} (n={row['n_test']}) | {row['backend']} | " +
                     " | ".join(pct(s[m]["mean"], s[m]["std"]) for m in methods) +
                     f" | {x['queries']} | {st.get('requests', '–')} | {st.get('prompt_tokens', '–')} | "
                     f"{st.get('floored', 0) if row['backend'] != 'in-process' else '–'} | {x['seconds']:.0f} | "
                     f"{row['wall_seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "maas_server.md").write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["bbt", "server"])
    ap.add_argument("--records", help="only render a DecT-vs-BBT table (to --stem) from run_bench records with "
                    "cells labelled dect and bbt, e.g. a GPU session's bbt_reference results.jsonl")
    ap.add_argument("--stem", help="with --records: the table's path without suffix")
    ap.add_argument("--note", default="", help="with --records: a paragraph under the machine line")
    ap.add_argument("--tasks", nargs="+", default=["sst2", "agnews"])
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--budget", type=int, default=40, help="BBT calls per seed (reference default 8000)")
    ap.add_argument("--popsize", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp server threads")
    ap.add_argument("--top-logprobs", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS), help="folder for maas_<part>.{json,md} and the run_bench "
                    "records (maas_<part>/)")
    args = ap.parse_args()
    if args.records:
        print(render_records(Path(args.records), Path(args.stem), args.note))
    elif args.part:
        {"bbt": part_bbt, "server": part_server}[args.part](args)
    else:
        ap.error("give --part or --records")


def render_records(path: Path, stem: Path, note: str = "") -> str:
    """The DecT-vs-BBT table of every (task, seed) that has both a dect and a bbt cell in ``path``."""
    lines = read_results(path)
    cells = [c for c in lines if c.get("type") == "cell"]
    pairs = sorted({(c["task"], c["seed"]) for c in cells if c["name"] == "bbt"}
                   & {(c["task"], c["seed"]) for c in cells if c["name"] == "dect"})
    rows = [row_from_records(lines, task, seed) for task, seed in pairs]
    bbt = next(c for c in cells if c["name"] == "bbt")
    machines = [x["machine"] for x in lines if x.get("type") == "header"]
    meta = {"model": bbt["model"], "shots": bbt["shots"], "seeds": sorted({s for _, s in pairs}),
            "test_size": bbt["n_test"], "bbt_budget": bbt["params"]["budget"],
            "bbt_popsize": bbt["params"].get("popsize", 20), "machine": machines[0] if machines else {},
            "records": str(path)}
    return render_bbt(rows, meta, stem, note=note)


if __name__ == "__main__":
    main()
