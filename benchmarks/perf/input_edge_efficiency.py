"""Training step time, inference latency and peak memory of the input-edge methods.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/input_edge_efficiency.py

Each method runs in its own process (so peak RSS is its own). Step time: the median of 10 full
optimizer steps (forward, backward, AdamW) on the same batch of 8 SST-2 training prompts, after 2
warm-up steps. Latency: the median of 5 passes over 64 SST-2 test prompts (batch 32) under
torch.inference_mode, for prompt tuning with 100 tokens and for ADePT after merge() (60 tokens, no
network). Peak memory: the process's maximum resident set size minus that right after loading the model.
Writes benchmarks/results/input_edge_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"

def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method_name: str, model_name: str) -> dict:
    from edgetune.backends import LocalBackend
    from edgetune.data import load_task
    from edgetune.methods import get_method

    backend = LocalBackend.load(model_name, progress=False)
    base_rss = rss_mb()
    task = load_task("sst2")
    train = task.sample(4, seed=0)
    test = task.load("test", limit=64)
    method = get_method(method_name)(backend, progress=False)
    method.labels_, method.template_ = task.labels, __import__("edgetune").Template(task.template)
    method.words_ = task.words
    method._setup()
    optimizer = torch.optim.AdamW(method.param_groups())
    device = next(method.module_.parameters()).device
    batch = method.backend.collate(method.encode(list(train))).to(device)
    y = torch.tensor(train.label_ids()).to(device)
    times = []
    method.module_.train()
    for i in range(12):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(method.module_(batch.input_ids, batch.attention_mask,
                                                                 batch.position), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - t)
    out = {"method": method_name, "trainable_params": method.trainable_params_, "step_seconds": times,
           "step_median_s": statistics.median(times)}
    method.module_.eval()
    module = method.merge().module if method_name == "adept" else method.module_
    ids = method.encode(list(test))
    lat = []
    for _ in range(6):
        t = time.perf_counter()
        with torch.inference_mode():
            for b in range(0, len(ids), 32):
                bt = method.backend.collate(ids[b : b + 32]).to(device)
                module(bt.input_ids, bt.attention_mask, bt.position)
        lat.append(time.perf_counter() - t)
    out["inference_seconds_64"] = lat[1:]
    out["inference_median_s"] = statistics.median(lat[1:])
    out["inference_note"] = "ADePT merged (60-token prompt, offsets folded into the embeddings)" if (
        method_name == "adept") else f"{method_name} as trained"
    out["peak_rss_over_model_mb"] = rss_mb() - base_rss
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "input_edge_efficiency.json"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.model)))
        return
    from edgetune.bench.records import machine_info

    rows = {}
    for name in ("pt", "adept", "dept", "lora"):
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--model", args.model],
                              capture_output=True, text=True, check=True)
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = rows[name]
        print(f"{name:6s} params {r['trainable_params']:>7,} · step {r['step_median_s']:.3f} s · "
              f"inference (64 prompts) {r['inference_median_s']:.3f} s · "
              f"peak RSS +{r['peak_rss_over_model_mb']:.0f} MB",
              flush=True)
    ratios = {"step_adept_over_pt": rows["adept"]["step_median_s"] / rows["pt"]["step_median_s"],
              "inference_merged_adept_over_pt100":
                  rows["adept"]["inference_median_s"] / rows["pt"]["inference_median_s"]}
    print(f"step time ADePT / PT = {ratios['step_adept_over_pt']:.2f} (target ≤ 1.10); inference merged ADePT / PT "
          f"= {ratios['inference_merged_adept_over_pt100']:.2f} (target < 1.0)")
    Path(args.out).write_text(json.dumps({"model": args.model, "rows": rows, "ratios": ratios,
                                          "machine": machine_info()}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
