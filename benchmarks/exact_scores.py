"""Exact label-word scores through a capped API (issue 14): floors vs logit_bias recovery on the llama.cpp server.

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/exact_scores.py [--tasks agnews trec] [--seeds 0 1 2]
            [--variants "top 20, floors" "top 20, exact" "top 500, floors"]

The llama.cpp server (llama-cpp-python, the packaged SmolLM2 Q4_1 GGUF, 2 threads) is asked with OpenAI's cap of
20 top log-probabilities, once with ``exact="off"`` (a label word outside the top 20 gets the floor) and once with
``exact="auto"`` (such a word is recovered with ``logit_bias``, see ``edgetune.backends.remote``), each with an
empty cache; the same run at ``top_logprobs=500`` (floors rare) is the reference. For each: how many label-word
scores were exact, recovered and floored, HTTP requests, extraction seconds, and zero-shot / calibrated / DecT
accuracy on the same 16-shot samples and test subset. Writes ``benchmarks/results/exact_scores.{json,md}``; rows
of another (task, variant) already there are kept, so tasks and variants can be run one at a time. Each row
records the DecT defaults it ran with (``dect_params``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VARIANTS = {"top 20, floors": (20, "off"), "top 20, exact": (20, "auto"), "top 500, floors": (500, "off")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["agnews", "trec"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    import warnings

    from edgetune.backends import FeatureCache, OpenAIBackend
    from edgetune.backends.server import LlamaServer
    from edgetune.data import load_task
    from edgetune.data.templates import Template
    from edgetune.methods import get_method
    from edgetune.methods.core.estimator import content_free_examples

    out = HERE / "results" / "exact_scores.json"
    asked = {(t, v) for t in args.tasks for v in args.variants}
    kept = [r for r in json.loads(out.read_text(encoding="utf-8")) if (r["task"], r["variant"]) not in asked] \
        if out.is_file() else []
    rows = []
    with LlamaServer("smollm2-135m", n_threads=2, n_ctx=1024) as srv, tempfile.TemporaryDirectory() as tmp:
        for task_name in args.tasks:
            task = load_task(task_name)
            test = task.load("test", limit=args.test_size, seed=0)
            template = Template(task.template)
            y_test = np.array(test.label_ids())
            for variant in args.variants:
                top, exact = VARIANTS[variant]
                be = OpenAIBackend("smollm2-135m", srv.base_url, top_logprobs=top, exact=exact, concurrency=4,
                                   cache=FeatureCache(Path(tmp) / f"{task_name}-{top}-{exact}.sqlite"), progress=False)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # floors are counted below
                    # every prompt the methods read, timed and counted here; their fits below hit the cache
                    be.features(list(test), template, task.words)
                    be.features(content_free_examples(template), template, task.words)
                    trains = [task.sample(16, s) for s in args.seeds]
                    for tr in trains:
                        be.features(list(tr), template, task.words)
                seconds = time.perf_counter() - start
                acc: dict[str, list[float]] = {}
                for tr in trains:
                    for name in ("zeroshot", "calibrated", "dect"):  # each method's own fit, from the cache
                        m = get_method(name)(be).fit(tr)
                        acc.setdefault(name, []).append(float((m.class_scores(test).argmax(1) == y_test).mean()))
                u = be.usage
                rows.append({"task": task_name, "variant": variant, "top_logprobs": top, "exact": exact,
                             "prompts": u["queries"], "scores": u["exact"] + u["floored"], "exact_scores": u["exact"],
                             "recovered": u["recovered"], "floored": u["floored"], "requests": u["requests"],
                             "bias_mode": be.bias_mode, "seconds": seconds, "seeds": args.seeds,
                             "test_size": args.test_size,
                             "dect_params": {k: get_method("dect")(be).get_params()[k] for k in ("solver", "epochs")},
                             "accuracy": {k: [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0]
                                          for k, v in acc.items()}})
                print(json.dumps(rows[-1]), flush=True)
    order = {(t, v): i for i, (t, v) in enumerate((t, v) for t in ("agnews", "trec") for v in VARIANTS)}
    rows = sorted(kept + rows, key=lambda r: order.get((r["task"], r["variant"]), len(order)))
    out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    md = ["# Exact label-word scores through a capped API · `python benchmarks/exact_scores.py`", "",
          f"llama.cpp server (llama-cpp-python, SmolLM2-135M Q4_1, 2 threads), 16-shot, seeds {args.seeds}, "
          f"{args.test_size} test examples, empty caches. Scores = label words × prompts (test, training samples, "
          "content-free). Accuracy % mean ± std over seeds.", "",
          "| task | variant | exact scores | of which recovered | floored | HTTP requests | extraction s | zero-shot | "
          "calibrated | DecT |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a = r["accuracy"]
        md.append(f"| {r['task']} | {r['variant']} | {r['exact_scores']} / {r['scores']} | {r['recovered']} | "
                  f"{r['floored']} | {r['requests']} | {r['seconds']:.0f} | "
                  + " | ".join(f"{100 * a[k][0]:.1f} ± {100 * a[k][1]:.1f}" for k in ("zeroshot", "calibrated", "dect"))
                  + " |")
    (HERE / "results" / "exact_scores.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
