"""The runs this project could only afford on a borrowed GPU, as one deadline-bounded session.

Usage:  EDGETUNE_DATA_DIR=… python benchmarks/gpu_session.py --out DIR [--deadline 450] [--workers 10]
            [--resume benchmarks/results/gpu_sessions/*.tar.gz]   (run only what earlier sessions left)
        python benchmarks/gpu_session.py --collect PARTS.tar.gz   (here, afterwards: renders the results)

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
   Each job writes its own JSON when it finishes; at the deadline unfinished jobs are killed and reported
   as missing, never padded.

Wall times in the queue are measured with several processes sharing the GPU; only the probe's are solo.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BBT_TASKS, IE_TASKS, SEEDS = ("sst2", "agnews"), ("sst2", "rte", "trec", "cb"), (0, 1, 2)
IE_METHODS = ("adept", "dept", "pt", "lora")
TEST_SIZE = 200


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
    sys.path.insert(0, str(HERE))
    from edgetune.backends import FeatureCache, load_backend
    from edgetune.bench.experiment import run_input_edge
    from edgetune.data import load_task

    kind, task, shots, seed, *rest = spec.split(":")
    if tf32:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True  # tensor cores for fp32 matrix products
        torch.backends.cudnn.allow_tf32 = True
    backend = load_backend(model, cache=FeatureCache(None), progress=False)
    if kind == "bbt":
        from model_as_a_service import bbt_row

        payload = bbt_row(backend, task, int(shots), int(seed), 10 if smoke else TEST_SIZE, 40 if smoke else 8000, 20)
    else:  # one process trains every method of a (task, shots, seed) in turn, storing each as it ends
        steps = int(rest[-1])
        params = {"steps": steps, "batch_size": 8, "eval_every": max(1, steps // 10), "dev_shots": 8,
                  "progress": False}
        for method in IE_METHODS:
            if part_path(parts, f"ie:{task}:{shots}:{seed}:{method}:{steps}").exists():
                continue  # stored by an earlier session (--resume)
            exp = run_input_edge(load_task(task), backend, int(shots), [int(seed)], [method],
                                 10 if smoke else TEST_SIZE, method_params={method: params})
            store(parts, f"ie:{task}:{shots}:{seed}:{method}:{steps}", exp.to_dict())
        return
    store(parts, spec, payload)


def part_path(parts: Path, spec: str, suffix: str = ".json") -> Path:
    """Where a job's result (or log) lives: the spec with ':' made file-name safe."""
    return parts / (spec.replace(":", "_") + suffix)


def store(parts: Path, spec: str, payload: dict) -> None:
    tmp = part_path(parts, "." + spec, ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(part_path(parts, spec))


def probe(model: str, smoke: bool = False) -> dict:
    sys.path.insert(0, str(HERE))
    import torch
    from model_as_a_service import bbt_row

    from edgetune.backends import FeatureCache, load_backend
    from edgetune.bench.experiment import machine_info

    t0 = time.perf_counter()
    backend = load_backend(model, cache=FeatureCache(None), progress=False)
    load_s = time.perf_counter() - t0
    bbt_row(backend, "sst2", 16, 1, 20, 40, 20)  # warm-up (CUDA context, kernels), not reported
    row = bbt_row(backend, "sst2", 16, 0, 10 if smoke else TEST_SIZE, 20 if smoke else 200, 20)
    return {"machine": machine_info(), "device": str(backend.device), "load_seconds": load_s,
            "cuda": torch.version.cuda, "row": row}


def session(args: argparse.Namespace) -> None:
    out = Path(args.out)
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    resumed = unpack(args.resume or [], parts)
    probed = (parts / "probe.json").exists()  # an earlier session's probe stands
    start = time.time()

    def say(msg: str) -> None:
        line = f"[{time.time() - start:6.1f}s] {msg}"
        print(line, flush=True)
        with open(out / "session.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    if resumed:
        say(f"resumed {len(resumed)} stored files (results, probe, machines) from {args.resume}")
    if args.only == "bbt" or probed:
        from edgetune.backends import resolve_model

        resolve_model(args.model)  # no probe: convert the GGUF once here, not in every worker at once
    if args.only == "bbt":  # one job at a time: every timing is solo
        from edgetune.bench.experiment import machine_info

        name = f"bbt_machine_{int(start)}.json" if (parts / "bbt_machine.json").exists() else "bbt_machine.json"
        (parts / name).write_text(json.dumps({"machine": machine_info(), "tf32": args.tf32,
                                                            "workers": args.workers}), encoding="utf-8")
    elif probed:  # resumed: record this session's machine beside the first one's probe
        from edgetune.bench.experiment import machine_info

        (parts / f"machine_{int(start)}.json").write_text(json.dumps({"machine": machine_info(),
                                                                      "workers": args.workers}),
                                                          encoding="utf-8")
    else:
        say(f"probe on {args.model}")
        info = probe(args.model, args.smoke)
        (parts / "probe.json").write_text(json.dumps(info), encoding="utf-8")
        r = info["row"]
        say(f"probe: load {info['load_seconds']:.1f}s · DecT {r['dect']['seconds']:.2f}s acc "
            f"{r['dect']['accuracy']:.3f} · BBT {r['bbt']['seconds_per_call'] * 1000:.1f} ms/call (200 calls) on "
            f"{info['machine'].get('gpu')}")
    todo = [j for j in jobs(args.steps) if not part_path(parts, j).exists()
            and (args.only is None or j.startswith(args.only + ":"))]
    queue = list(dict.fromkeys(j if j.startswith("bbt:") else ":".join([*j.split(":")[:4], str(args.steps)])
                               for j in todo))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: list[str] = []
    while queue or running:
        while queue and len(running) < args.workers:
            spec = queue.pop(0)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--job", spec, "--parts", str(parts),
                   "--model", args.model] + (["--smoke"] if args.smoke else []) + (["--tf32"] if args.tf32 else [])
            with open(part_path(parts, spec, ".log"), "w") as logf:  # the child keeps its own handle
                running[spec] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env), time.time())
        for spec, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                del running[spec]
                ok = proc.returncode == 0
                if not ok:
                    failed.append(spec)
                say(f"{'done' if ok else 'FAILED'} {spec} in {time.time() - t0:.0f}s "
                    f"({len(queue)} queued, {len(running)} running)")
        if time.time() - start > args.deadline:
            say(f"deadline: killing {sorted(running)}; never started: {len(queue)}")
            for proc, _ in running.values():
                proc.kill()
            break
        time.sleep(0.5)
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


def collect(archives: list[str], steps: int) -> None:
    """Render committed results from sessions' parts archives (run here, after the GPU sessions)."""
    import tempfile

    import numpy as np
    from input_edge_accuracy import render as render_ie
    from model_as_a_service import render_bbt

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
    note = (f"Measured on {borrowed(gpus)} in {sessions} by `benchmarks/gpu_session.py` (fp32; torch "
            f"{machine['torch']}, Python {machine['python']}{' in the first' if later else ''}). "
            f"Wall times were measured with {workers} worker processes sharing the GPU"
            f"{' (per session)' if later else ''}, so they are inflated by an unknown factor.")
    bbt_path = parts / "bbt_machine.json"
    if bbt_path.exists():
        bbt_info = json.loads(bbt_path.read_text())
        bbt_gpus = list(dict.fromkeys(str(json.loads(p.read_text())["machine"].get("gpu"))
                                      for p in sorted(parts.glob("bbt_machine*.json"))))
        bbt_note = (f"Measured on {borrowed(bbt_gpus)} by `benchmarks/gpu_session.py --only bbt --workers 1"
                    f"{' --tf32' if bbt_info['tf32'] else ''}`: one run at a time (solo timings), fp32 weights with "
                    f"{'TF32 matrix products' if bbt_info['tf32'] else 'fp32 matrix products'}, each generation's 20 "
                    "candidates scored in one forward pass (`max_rows` 1024). Each run is a fresh process: DecT's "
                    "time includes the first CUDA kernels' warm-up. An earlier solo probe (fp32, one candidate per "
                    f"pass, after a warm-up) measured BBT at {probe_info['row']['bbt']['seconds_per_call'] * 1000:.1f} "
                    f"ms per call and DecT at {probe_info['row']['dect']['seconds']:.2f} s for its whole training "
                    f"(sst2 16-shot seed 0; BBT at 200 calls: {probe_info['row']['bbt']['accuracy']:.1%} test "
                    "accuracy).")
    else:
        bbt_note = note
    rows = [json.loads(part_path(parts, j).read_text()) for j in expected
            if j.startswith("bbt:") and j not in missing]
    if rows:
        meta = {"model": "smollm2-135m", "shots": 16, "seeds": list(SEEDS), "test_size": TEST_SIZE,
                "bbt_budget": 8000, "bbt_popsize": 20, "machine": machine, "probe": probe_info,
                "missing": [j for j in missing if j.startswith("bbt:")]}
        missing_bbt = meta["missing"]
        if missing_bbt:
            bbt_note += (f" Not run for lack of device time (not estimated, not padded): {missing_bbt}.")
        print(render_bbt(rows, meta, RESULTS / "maas_bbt_gpu", note=bbt_note))
    groups: dict[tuple[str, int], list[dict]] = {}
    for j in expected:
        if j.startswith("ie:") and j not in missing:
            d = json.loads(part_path(parts, j).read_text())
            groups.setdefault((d["task"], d["shots"]), []).append(d)
    done = []
    for ds in groups.values():
        results = [r for d in ds for r in d["results"]]
        summary = {}
        for m in IE_METHODS:
            accs = np.array([r["accuracy"] for r in results if r["method"] == m])
            if len(accs) == 0:
                continue
            rr = [r for r in results if r["method"] == m]
            summary[m] = {"mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                          "fit_seconds_mean": float(np.mean([r["fit_seconds"] for r in rr])),
                          "n_seeds": len(accs), "trainable_params": rr[0]["trainable_params"],
                          "final_loss_mean": float(np.mean([r["training"]["final_loss"] for r in rr]))}
        done.append(ds[0] | {"seeds": sorted({r["seed"] for r in results}), "results": results, "summary": summary})
    if done:
        args = argparse.Namespace(model="smollm2-135m", steps=steps, batch_size=8, test_size=TEST_SIZE,
                                  eval_every=max(1, steps // 10), machine=machine, note=note,
                                  missing=[j for j in missing if j.startswith("ie:")])
        stem = RESULTS / "input_edge_accuracy_gpu"
        stem.with_suffix(".json").write_text(json.dumps({"machine": machine, "steps": steps, "experiments": done,
                                                         "missing": args.missing}, indent=2), encoding="utf-8")
        text = render_ie(done, args)
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
    ap.add_argument("--resume", nargs="+", help="earlier sessions' parts.tar.gz: their stored results are kept "
                    "and not run again")
    args = ap.parse_args()
    if args.job:
        run_job(args.job, Path(args.parts), args.model, args.smoke, args.tf32)
    elif args.collect:
        collect(args.collect, args.steps)
    else:
        session(args)


if __name__ == "__main__":
    main()
