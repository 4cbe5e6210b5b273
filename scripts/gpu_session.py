"""The runs this project could only afford on a borrowed GPU, as one deadline-bounded session.

Usage:  EDGETUNE_DATA_DIR=… python scripts/gpu_session.py --out DIR [--deadline 450] [--workers 10]
            [--resume benchmarks/results/gpu_sessions/*.tar.gz]   (run only what earlier sessions left)
        python scripts/gpu_session.py --collect PARTS.tar.gz [--results DIR]   (here, afterwards: renders
            the results into DIR, default benchmarks/results; needs no GPU)

What it runs, in this order, all on the default packaged model (SmolLM2-135M, fp32) and the shared data:

1. a solo timing probe (nothing else on the GPU): DecT on sst2 16-shot seed 0 and 200 BBT calls;
2. a queue of jobs over ``--workers`` processes sharing the one GPU (the model is small: one process
   leaves the GPU mostly idle between kernel launches), highest priority first:
   - **BBT at its reference budget** (8,000 calls, pop 20, intrinsic dim 500) vs DecT on sst2 and agnews,
     16-shot, seeds 0–2, test subset 200 (the runs the CPU could not afford: ≈ 14 h / 45 h per seed);
   - **input-edge methods** (ADePT, DePT, prompt tuning, LoRA at the matched budget) on sst2, rte, trec, cb,
     16- and 64-shot, seeds 0–2, ``--steps`` AdamW steps of 8 with a dev check every ``--steps``/10 steps,
     test subsets of 200 (cb: its 56). CB has 16 training examples of ``neutral``, so 64-shot CB is
     impossible and not run.
   Every run is a cell of edgetune's one runner (``run_bench``); each job stores the records of each run
   (``{"records": [...]}``) as its own JSON part when it finishes; at the deadline unfinished jobs are killed
   and reported as missing, never padded. ``--collect`` reads these parts and the older sessions' parts
   (the earlier experiment runner's dicts and DecT-vs-BBT rows) alike.

Wall times in the queue are measured with several processes sharing the GPU; only the probe's are solo.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = HERE / "results"
BBT_TASKS, IE_TASKS, SEEDS = ("sst2", "agnews"), ("sst2", "rte", "trec", "cb"), (0, 1, 2)
IE_METHODS = ("adept", "dept", "pt", "lora")
TEST_SIZE = 200
# --smoke checks the plumbing only: tiny test sets and BBT searches (one generation of 4, the least cma takes,
# affordable on a CPU)
SMOKE_TEST_SIZE, SMOKE_BBT_BUDGET, SMOKE_BBT_POPSIZE = 10, 4, 4


def jobs(steps: int) -> list[str]:
    out = [f"bbt:{t}:16:{s}" for t in BBT_TASKS for s in SEEDS]
    for shots in (16, 64):
        for seed in SEEDS:
            for task in IE_TASKS:
                if task == "cb" and shots == 64:
                    continue  # 16 neutral examples in CB's train split
                out += [f"ie:{task}:{shots}:{seed}:{m}:{steps}" for m in IE_METHODS]
    return out


def run_job(spec: str, parts: Path, model: str, smoke: bool = False, tf32: bool = False) -> None:
    sys.path.insert(0, str(HERE / "perf"))  # model_as_a_service
    from edgetune.backends import FeatureCache, load_backend

    kind, task, shots, seed, *rest = spec.split(":")
    if tf32:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True  # tensor cores for fp32 matrix products
        torch.backends.cudnn.allow_tf32 = True
    backend = load_backend(model, cache=FeatureCache(None), progress=False)
    test_size = SMOKE_TEST_SIZE if smoke else TEST_SIZE
    if kind == "bbt":
        from model_as_a_service import bbt_records

        budget, popsize = (SMOKE_BBT_BUDGET, SMOKE_BBT_POPSIZE) if smoke else (8000, 20)
        store(parts, spec, {"records": bbt_records(backend, task, int(shots), int(seed), test_size, budget, popsize)})
        return
    # one process trains every method of a (task, shots, seed) in turn, storing each as it ends
    steps = int(rest[-1])
    params = {"steps": steps, "batch_size": 8, "eval_every": max(1, steps // 10), "dev_shots": 8}
    for method in IE_METHODS:
        name = f"ie:{task}:{shots}:{seed}:{method}:{steps}"
        if part_path(parts, name).exists():
            continue  # stored by an earlier session (--resume)
        store(parts, name, {"records": ie_records(backend, model, task, int(shots), int(seed), method, params,
                                                  test_size)})


def ie_records(backend, model: str, task: str, shots: int, seed: int, method: str, params: dict,
               test_size: int) -> list[dict]:
    """One input-edge run (``method`` on ``task``'s ``shots``-shot sample ``seed``) through ``run_bench``;
    the lines of its results file."""
    import tempfile

    from edgetune.backends import FeatureCache
    from edgetune.bench import BenchConfig, MethodEntry, read_results, run_bench

    config = BenchConfig(name="gpu_session", tasks=[task], models=[model], shots=[shots], seeds=[seed],
                         test_size=test_size, methods=[MethodEntry(method, method, dict(params))])
    with tempfile.TemporaryDirectory() as tmp:
        path = run_bench(config, output=tmp, progress=False, backends={model: backend}, cache=FeatureCache(None))
        return read_results(path)


def part_path(parts: Path, spec: str, suffix: str = ".json") -> Path:
    """Where a job's result (or log) lives: the spec with ':' made file-name safe."""
    return parts / (spec.replace(":", "_") + suffix)


def store(parts: Path, spec: str, payload: dict) -> None:
    tmp = part_path(parts, "." + spec, ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(part_path(parts, spec))


def probe(model: str, smoke: bool = False) -> dict:
    sys.path.insert(0, str(HERE / "perf"))  # model_as_a_service
    import torch
    from model_as_a_service import bbt_records, row_from_records

    from edgetune.backends import FeatureCache, load_backend
    from edgetune.bench.records import machine_info

    t0 = time.perf_counter()
    backend = load_backend(model, cache=FeatureCache(None), progress=False)
    load_s = time.perf_counter() - t0
    if smoke:
        bbt_records(backend, "sst2", 16, 1, SMOKE_TEST_SIZE, SMOKE_BBT_POPSIZE, SMOKE_BBT_POPSIZE)  # warm-up
        lines = bbt_records(backend, "sst2", 16, 0, SMOKE_TEST_SIZE, SMOKE_BBT_POPSIZE, SMOKE_BBT_POPSIZE)
    else:
        bbt_records(backend, "sst2", 16, 1, 20, 40, 20)  # warm-up (CUDA context, kernels), not reported
        lines = bbt_records(backend, "sst2", 16, 0, TEST_SIZE, 200, 20)
    return {"machine": machine_info(), "device": str(backend.device), "load_seconds": load_s,
            "cuda": torch.version.cuda, "row": row_from_records(lines), "records": lines}


def session(args: argparse.Namespace) -> None:
    out = Path(args.out)
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    resumed = unpack(args.resume or [], parts)
    probed = (parts / "probe.json").exists()  # an earlier session's probe stands
    start = time.time()
    from gpu_bench import run_queue, session_logger

    say = session_logger(out, start)
    if resumed:
        say(f"resumed {len(resumed)} stored files (results, probe, machines) from {args.resume}")
    if args.only == "bbt" or probed:
        from edgetune.backends import resolve_model

        resolve_model(args.model)  # no probe: convert the GGUF once here, not in every worker at once
    if args.only == "bbt":  # one job at a time: every timing is solo
        from edgetune.bench.records import machine_info

        name = f"bbt_machine_{int(start)}.json" if (parts / "bbt_machine.json").exists() else "bbt_machine.json"
        (parts / name).write_text(json.dumps({"machine": machine_info(), "tf32": args.tf32,
                                                            "workers": args.workers}), encoding="utf-8")
    elif probed:  # resumed: record this session's machine beside the first one's probe
        from edgetune.bench.records import machine_info

        (parts / f"machine_{int(start)}.json").write_text(json.dumps({"machine": machine_info(),
                                                                      "workers": args.workers}),
                                                          encoding="utf-8")
    else:
        say(f"probe on {args.model}")
        info = probe(args.model, args.smoke)
        (parts / "probe.json").write_text(json.dumps(info), encoding="utf-8")
        r = info["row"]
        say(f"probe: load {info['load_seconds']:.1f}s · DecT {r['dect']['seconds']:.2f}s acc "
            f"{r['dect']['accuracy']:.3f} · BBT {r['bbt']['seconds_per_call'] * 1000:.1f} ms/call "
            f"({r['bbt']['calls']} calls) on {info['machine'].get('gpu')}")
    todo = [j for j in jobs(args.steps) if not part_path(parts, j).exists()
            and (args.only is None or j.startswith(args.only + ":"))]
    queue = list(dict.fromkeys(j if j.startswith("bbt:") else ":".join([*j.split(":")[:4], str(args.steps)])
                               for j in todo))
    flags = (["--smoke"] if args.smoke else []) + (["--tf32"] if args.tf32 else [])
    commands = [(spec, [sys.executable, str(Path(__file__).resolve()), "--job", spec, "--parts", str(parts),
                        "--model", args.model, *flags], part_path(parts, spec, ".log")) for spec in queue]
    failed = run_queue(commands, args.workers, start + args.deadline, say)
    done = sorted(p.name for p in parts.glob("*.json"))
    say(f"finished {len(done)} files; failed {failed}")
    with tarfile.open(out / "parts.tar.gz", "w:gz") as tar:
        tar.add(parts, arcname="parts")
    say("packed parts.tar.gz")


def unpack(archives: list[str], parts: Path) -> list[str]:
    """Merge sessions' parts archives into ``parts`` (a later archive's file wins over an earlier one of the
    same name); return the result files now there. Logs are not carried over."""
    import tempfile

    parts.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    for i, archive in enumerate(archives):
        with tarfile.open(archive) as tar:
            tar.extractall(work / str(i), filter="data")
        for f in (work / str(i) / "parts").iterdir():
            if f.suffix == ".json":
                f.replace(parts / f.name)
    return sorted(p.name for p in parts.glob("*.json"))


def borrowed(gpus: list[str]) -> str:
    return f"one borrowed {gpus[0]}" if len(gpus) == 1 else f"borrowed GPUs ({', '.join(gpus)})"


def bbt_part_row(d: dict) -> dict:
    """A DecT-vs-BBT row from a bbt part: run_bench records (this script now) or the row itself (sessions
    before the one runner)."""
    from model_as_a_service import row_from_records

    return row_from_records(d["records"]) if "records" in d else d


def ie_part_experiment(d: dict) -> dict:
    """An input-edge part as an experiment dict (task, shots, seeds, test size, results, ...): run_bench records
    (this script now: the results are its cell records) or the old experiment runner's dict as it was stored."""
    if "records" not in d:
        return d
    cells = [x for x in d["records"] if x.get("type") == "cell"]
    header = next(x for x in d["records"] if x.get("type") == "header")
    c = cells[0]
    return {"task": c["task_name"], "model": c["model"], "model_identity": c.get("model_identity"),
            "backend": c.get("backend"), "shots": c["shots"], "seeds": sorted({x["seed"] for x in cells}),
            "n_test": c["n_test"], "results": cells, "machine": header["machine"]}


def collect(archives: list[str], steps: int, results: Path = RESULTS) -> None:
    """Render committed results from sessions' parts archives (run here, after the GPU sessions) into
    ``results``."""
    import tempfile

    from input_edge_accuracy import as_cells, summarise
    from input_edge_accuracy import render as render_ie
    from model_as_a_service import render_bbt

    results.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp()) / "merged"
    unpack(archives, parts)
    probe_info = json.loads((parts / "probe.json").read_text())
    machine = probe_info["machine"]
    expected = jobs(steps)
    missing = [j for j in expected if not part_path(parts, j).exists()]
    later = [json.loads(p.read_text()) for p in sorted(parts.glob("machine_*.json"))]
    gpus = list(dict.fromkeys(str(m.get("gpu")) for m in [machine, *(x["machine"] for x in later)]))
    workers = ", ".join(["12", *(str(x["workers"]) for x in later)])
    sessions = "one session" if not later else f"{1 + len(later)} sessions"
    note = (f"Measured on {borrowed(gpus)} in {sessions} by `scripts/gpu_session.py` (fp32; torch "
            f"{machine['torch']}, Python {machine['python']}{' in the first' if later else ''}). "
            f"Wall times were measured with {workers} worker processes sharing the GPU"
            f"{' (per session)' if later else ''}, so they are inflated by an unknown factor.")
    bbt_parts = {j: json.loads(part_path(parts, j).read_text()) for j in expected
                 if j.startswith("bbt:") and j not in missing}
    bbt_path = parts / "bbt_machine.json"
    if bbt_path.exists():
        bbt_info = json.loads(bbt_path.read_text())
        bbt_gpus = list(dict.fromkeys(str(json.loads(p.read_text())["machine"].get("gpu"))
                                      for p in sorted(parts.glob("bbt_machine*.json"))))
        # runs before the one runner trained DecT first; run_bench extracts the test set's features first
        cold = [j for j, d in bbt_parts.items() if "records" not in d]
        if len(cold) == len(bbt_parts):
            warm_up = "DecT's time includes the first CUDA kernels' warm-up"
        elif not cold:
            warm_up = "the test set's features are extracted first, so DecT's time excludes the first CUDA kernels' "
            warm_up += "warm-up"
        else:
            warm_up = (f"DecT's time includes the first CUDA kernels' warm-up in {cold}, not in the later runs, which "
                       "extract the test set's features first")
        probe_how = "fp32, one candidate per pass" if "records" not in probe_info else "fp32"
        bbt_note = (f"Measured on {borrowed(bbt_gpus)} by `scripts/gpu_session.py --only bbt --workers 1"
                    f"{' --tf32' if bbt_info['tf32'] else ''}`: one run at a time (solo timings), fp32 weights with "
                    f"{'TF32 matrix products' if bbt_info['tf32'] else 'fp32 matrix products'}, each generation's 20 "
                    f"candidates scored in one forward pass (`max_rows` 1024). Each run is a fresh process: {warm_up}. "
                    f"An earlier solo probe ({probe_how}, after a warm-up) measured BBT at "
                    f"{probe_info['row']['bbt']['seconds_per_call'] * 1000:.1f} "
                    f"ms per call and DecT at {probe_info['row']['dect']['seconds']:.2f} s for its whole training "
                    f"(sst2 16-shot seed 0; BBT at 200 calls: {probe_info['row']['bbt']['accuracy']:.1%} test "
                    "accuracy).")
    else:
        bbt_note = note
    rows = [bbt_part_row(d) for d in bbt_parts.values()]
    if rows:
        meta = {"model": "smollm2-135m", "shots": 16, "seeds": list(SEEDS), "test_size": TEST_SIZE,
                "bbt_budget": 8000, "bbt_popsize": 20, "machine": machine,
                "probe": {k: v for k, v in probe_info.items() if k != "records"},
                "missing": [j for j in missing if j.startswith("bbt:")]}
        missing_bbt = meta["missing"]
        if missing_bbt:
            bbt_note += (f" Not run for lack of device time (not estimated, not padded): {missing_bbt}.")
        print(render_bbt(rows, meta, results / "maas_bbt_gpu", note=bbt_note))
    groups: dict[tuple[str, int, int], list[dict]] = {}
    for j in expected:
        if j.startswith("ie:") and j not in missing:
            d = ie_part_experiment(json.loads(part_path(parts, j).read_text()))
            groups.setdefault((d["task"], d["shots"], d["n_test"]), []).append(d)
    done = []
    for ds in groups.values():
        results_ = [r for d in ds for r in d["results"]]  # as stored: old runner's dicts or cell records
        (summary,) = summarise(as_cells([{"results": results_}])).values()
        done.append(ds[0] | {"seeds": sorted({r["seed"] for r in results_}), "results": results_,
                             "summary": summary["methods"]})
    if done:
        args = argparse.Namespace(model="smollm2-135m", steps=steps, batch_size=8, test_size=TEST_SIZE,
                                  eval_every=max(1, steps // 10), machine=machine, note=note,
                                  missing=[j for j in missing if j.startswith("ie:")])
        stem = results / "input_edge_accuracy_gpu"
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "steps": steps, "experiments": done,
                                                         "missing": args.missing}, indent=2), encoding="utf-8")
        text = render_ie(as_cells(done), args)
        stem.with_suffix(".md").write_text(text, encoding="utf-8")
        print(text)
    print(f"missing: {missing}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="folder for session.log and parts.tar.gz")
    ap.add_argument("--parts", default="/tmp/edgetune_parts")
    ap.add_argument("--deadline", type=float, default=450, help="seconds before unfinished jobs are killed")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--steps", type=int, default=250, help="AdamW steps per input-edge run")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="tiny budgets and test sets: check the plumbing only")
    ap.add_argument("--only", choices=["bbt", "ie"], help="run only these jobs (bbt: no probe, pass --workers 1)")
    ap.add_argument("--tf32", action="store_true", help="let fp32 matrix products use TF32 tensor cores")
    ap.add_argument("--collect", nargs="+", help="render results from sessions' parts.tar.gz archives")
    ap.add_argument("--results", default=str(RESULTS), help="where --collect writes (default benchmarks/results)")
    ap.add_argument("--resume", nargs="+", help="earlier sessions' parts.tar.gz: their stored results are kept "
                    "and not run again")
    args = ap.parse_args()
    if args.job:
        run_job(args.job, Path(args.parts), args.model, args.smoke, args.tf32)
    elif args.collect:
        collect(args.collect, args.steps, Path(args.results))
    else:
        session(args)


if __name__ == "__main__":
    main()
