"""Extraction throughput: edgetune's LocalBackend vs a bare batched forward loop over the same prompts.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/extraction_throughput.py [--task sst2 --n 400]

Two bare loops, both tokenizer(batch, padding=True) under torch.inference_mode in dataset order, batch
size 32: "bare full" calls model(**batch) as a user would (full-vocabulary logits at every position);
"bare body" runs only the transformer body and the label words' output rows at the last position,
i.e. the same arithmetic as edgetune without length sorting, caching or bookkeeping. edgetune runs
with an in-memory cache (so every prompt is a real query). Each is timed --repeats times after one
warm-up run; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from edgetune.backends import FeatureCache, LocalBackend
from edgetune.bench.records import machine_info
from edgetune.data import Template, load_task

RESULTS = Path(__file__).resolve().parents[1] / "results"

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(RESULTS / "extraction_throughput.json"))
    args = ap.parse_args()

    task = load_task(args.task)
    data = task.load("test", limit=args.n)
    template = Template(task.template)
    backend = LocalBackend.load(args.model, progress=False, batch_size=args.batch_size)
    model, tok = backend.model, backend.tokenizer
    texts = [template.render(ex).text_before for ex in data]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"

    def bare() -> None:
        with torch.inference_mode():
            for b in range(0, len(texts), args.batch_size):
                enc = tok(texts[b : b + args.batch_size], return_tensors="pt", padding=True)
                model(**enc)

    ids = backend.check_label_words(task.words)

    def bare_body() -> None:
        with torch.inference_mode():
            for b in range(0, len(texts), args.batch_size):
                enc = tok(texts[b : b + args.batch_size], return_tensors="pt", padding=True)
                h = model.base_model(**enc).last_hidden_state
                last = enc["attention_mask"].sum(1) - 1
                h[torch.arange(len(h)), last] @ model.get_output_embeddings().weight[ids].T

    def ours() -> None:
        backend.cache = FeatureCache(None)
        backend.features(data, template, task.words)

    bare_t, body_t, ours_t = [], [], []
    ours()  # warm-up
    for _ in range(args.repeats):
        t = time.perf_counter()
        bare()
        bare_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        bare_body()
        body_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours()
        ours_t.append(time.perf_counter() - t)
    b, bb, o = statistics.median(bare_t), statistics.median(body_t), statistics.median(ours_t)
    result = {
        "task": args.task, "n_prompts": len(texts), "model": args.model, "batch_size": args.batch_size,
        "bare_full_seconds": bare_t, "bare_body_seconds": body_t, "edgetune_seconds": ours_t,
        "bare_full_prompts_per_s": len(texts) / b, "bare_body_prompts_per_s": len(texts) / bb,
        "edgetune_prompts_per_s": len(texts) / o,
        "ratio_edgetune_over_bare_full": b / o, "ratio_edgetune_over_bare_body": bb / o, "machine": machine_info(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"bare full: {len(texts) / b:.1f} prompts/s · bare body: {len(texts) / bb:.1f} prompts/s · "
          f"edgetune: {len(texts) / o:.1f} prompts/s · ratios {b / o:.2f} and {bb / o:.2f} (target ≥ 0.9)")


if __name__ == "__main__":
    main()
