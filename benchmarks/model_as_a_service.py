"""Model as a service: DecT vs BBT, and DecT through the llama.cpp server vs in-process.

Usage:
  EDGETUNE_DATA_DIR=../shared/data python benchmarks/model_as_a_service.py --part bbt [--budget 40]
  EDGETUNE_DATA_DIR=../shared/data python benchmarks/model_as_a_service.py --part server

``--part bbt``: on the same 16-shot samples (seeds) and the same seeded test subset, DecT and BBT on the
in-process model. DecT's cost is measured with an empty cache (its training queries are real); its wall
time is extraction of the training (+ content-free) prompts plus decoder training. BBT's wall time is
its whole CMA-ES search (including its dev evaluations). Test-set inference is excluded for both.
Queries are forward passes over single samples.

``--part server``: DecT (and its baselines, same features) with the llama.cpp server on 127.0.0.1
(``edgetune.backends.server.LlamaServer``, the packaged Q4_1 GGUF, 2 threads) vs in-process (the same
GGUF de-quantised to fp32), each with an empty cache: queries, HTTP requests, wall time, accuracy.

Writes benchmarks/results/maas_<part>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgetune.backends import FeatureCache, OpenAIBackend, load_backend
from edgetune.bench.experiment import machine_info, run_output_edge, write_json
from edgetune.bench.report import NAMES, pct
from edgetune.data import load_task
from edgetune.methods import BBT, DecT

RESULTS = Path(__file__).parent / "results"


def bbt_row(backend, name: str, shots: int, seed: int, test_size: int, budget: int, popsize: int,
            test_cache: FeatureCache | None = None) -> dict:
    """DecT (empty cache: its queries are real) and BBT on one task's ``shots``-shot sample ``seed``."""
    task = load_task(name)
    test = task.load("test", limit=test_size, seed=0)
    y = np.array(test.label_ids())
    train = task.sample(shots, seed)
    backend.cache = FeatureCache(None)  # DecT pays for its queries
    before = backend.total_queries
    t0 = time.perf_counter()
    dect = DecT(backend, seed=seed).fit(train)
    dect_s = time.perf_counter() - t0
    dect_q = backend.total_queries - before
    backend.cache = test_cache if test_cache is not None else FeatureCache(None)
    dect_acc = float((np.array(dect.decision_function(test)).argmax(1) == y).mean())
    t0 = time.perf_counter()
    bbt = BBT(backend, budget=budget, popsize=popsize, seed=seed, progress=False).fit(train)
    bbt_s = time.perf_counter() - t0
    bbt_acc = float((bbt.decision_function(list(test)).argmax(1) == y).mean())
    h = bbt.history_
    return {"task": name, "seed": seed, "n_train": len(train), "n_test": len(test),
            "dect": {"accuracy": dect_acc, "seconds": dect_s, "queries": dect_q},
            "bbt": {"accuracy": bbt_acc, "seconds": bbt_s, "calls": h["calls"],
                    "queries": h["train_queries"] + h["dev_queries"], "budget": budget,
                    "seconds_per_call": bbt_s / h["calls"], "best_train_loss": h["best_train_loss"],
                    "dev_accuracy": h["dev_accuracy"]}}


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
    backend = load_backend(args.model, cache=FeatureCache(None), progress=False)
    rows = []
    for name in args.tasks:
        test_cache = FeatureCache(None)
        for seed in args.seeds:
            row = bbt_row(backend, name, args.shots, seed, args.test_size, args.budget, args.popsize, test_cache)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("task", "seed")} | {"dect": row["dect"],
                  "bbt": {k: row["bbt"][k] for k in ("accuracy", "seconds", "calls", "queries")}}), flush=True)
    meta = {"model": args.model, "shots": args.shots, "seeds": args.seeds, "test_size": args.test_size,
            "bbt_budget": args.budget, "bbt_popsize": args.popsize, "machine": machine_info()}
    print(render_bbt(rows, meta, RESULTS / "maas_bbt"))


def part_server(args: argparse.Namespace) -> None:
    from edgetune.backends.server import LlamaServer

    local = load_backend(args.model, progress=False, cache=FeatureCache(None))
    methods = ("zeroshot", "calibrated", "linear_probe", "dect")
    exps, walls = [], []
    with LlamaServer(args.model, n_threads=args.threads, n_ctx=2048) as server:
        remote = OpenAIBackend(server.alias, server.base_url, cache=FeatureCache(None), top_logprobs=args.top_logprobs,
                               concurrency=args.concurrency, progress=False)
        for name in args.tasks:
            task = load_task(name)
            for label, backend in (("in-process", local), ("llama.cpp server", remote)):
                backend.cache = FeatureCache(None)
                t0 = time.perf_counter()
                exp = run_output_edge(task, backend, args.shots, args.seeds, methods, args.test_size)
                walls.append(time.perf_counter() - t0)
                exps.append((label, exp))
                s = exp.summary()
                print(f"{name} {label}: DecT {pct(s['dect']['mean'], s['dect']['std'])} · queries "
                      f"{exp.extraction.queries} · {walls[-1]:.0f} s · {exp.extraction.stats}", flush=True)
    write_json([e for _, e in exps], RESULTS / "maas_server.json")
    lines = [f"# DecT through the llama.cpp server vs in-process · {args.model} · {args.shots}-shot · seeds "
             f"{args.seeds}", "", f"Machine: {json.dumps(machine_info())}",
             f"Server: llama-cpp-python 0.3.36, packaged Q4_1 GGUF, {args.threads} threads, top_logprobs "
             f"{args.top_logprobs}, concurrency {args.concurrency}. In-process: the same GGUF de-quantised to fp32.",
             "", "| task | backend | " + " | ".join(NAMES[m] for m in methods) +
             " | queries | HTTP requests | prompt tokens | floored scores | extraction s | wall s |",
             "|---" * (len(methods) + 8) + "|"]
    for (label, e), wall in zip(exps, walls, strict=True):
        s = e.summary()
        st = e.extraction.stats
        lines.append(f"| {e.task} (n={e.n_test}) | {label} | " + " | ".join(pct(s[m]["mean"], s[m]["std"])
                                                                       for m in methods) +
                     f" | {e.extraction.queries} | {st.get('requests', '–')} | {st.get('prompt_tokens', '–')} | "
                     f"{st.get('floored', 0) if label != 'in-process' else '–'} | {e.extraction.seconds:.0f} | "
                     f"{wall:.0f} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "maas_server.md").write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["bbt", "server"], required=True)
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
    args = ap.parse_args()
    {"bbt": part_bbt, "server": part_server}[args.part](args)


if __name__ == "__main__":
    main()
