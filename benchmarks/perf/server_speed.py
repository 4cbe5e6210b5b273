"""How fast prompts are read through a serving engine, against the same model in this process (issue 29, part 6).

Usage:  EDGETUNE_DATA_DIR=../shared/data python benchmarks/perf/server_speed.py [--task sst2] [--n 100]
            [--threads 2] [--concurrency 1 4]

The llama.cpp server (llama-cpp-python, the packaged Q4_1 GGUF of SmolLM2-135M, ``--threads`` threads, loopback)
reads ``--n`` held-out prompts of ``--task`` (the test split, first n) with an empty cache, once per setting:

- ``concurrency`` requests in flight (1, 4, ...), with the hidden representation (two requests per prompt: a
  completion at a top-20 cap with exact recovery of missing label words by ``logit_bias``, and an embeddings
  request) and without it (``hidden=False``: label-word scores only);
- the embeddings half alone, one request per prompt against one request for every 16 prompts (``input`` as a
  list), to see what batching the second request would buy.

In-process, the same model (the HF safetensors, float32 and the format ``dtype="auto"`` picks here) reads the
same prompts in batches of 32. Each setting runs twice and the faster is kept (first-run costs are not the
engine's). Writes benchmarks/results/server_speed.{json,md}. Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    from edgetune.backends import FeatureCache, OpenAIBackend, load_backend
    from edgetune.backends.server import LlamaServer
    from edgetune.bench.records import machine_info
    from edgetune.data import Template, load_task

    task = load_task(args.task)
    test = list(task.load("test"))[: args.n]
    template, words = Template(task.template), task.words
    texts = [template.render(e).text_before for e in test]
    rows: list[dict] = []

    def timed(label: str, backend, **extra) -> None:
        best = None
        for _ in range(2):
            backend.cache = FeatureCache(None)
            before = dict(backend.usage)
            t0 = time.perf_counter()
            feats = backend.features(test, template, words)
            seconds = time.perf_counter() - t0
            if best is None or seconds < best["seconds"]:
                used = {k: v - before.get(k, 0) for k, v in backend.usage.items() if v - before.get(k, 0)}
                best = {"setting": label, "seconds": seconds, "prompts_per_s": len(test) / seconds,
                        "usage": used, "hidden_dim": int(feats.hidden.shape[1]), **extra}
        rows.append(best)
        print(f"{label}: {best['prompts_per_s']:.2f} prompts/s", flush=True)

    for dtype in ("float32", "auto"):
        local = load_backend(args.model, progress=False, cache=FeatureCache(None), dtype=dtype, threads=args.threads)
        timed(f"in-process {local.dtype}".replace("torch.", ""), local)
        del local

    with LlamaServer(args.model, n_threads=args.threads, n_ctx=2048) as server:
        for conc in args.concurrency:
            for hidden in (True, False):
                remote = OpenAIBackend(server.alias, server.base_url, cache=FeatureCache(None), concurrency=conc,
                                       hidden=hidden, progress=False)
                timed(f"llama.cpp server, concurrency {conc}, {'scores + hidden' if hidden else 'scores only'}",
                      remote, concurrency=conc, hidden=hidden)
        root = server.base_url
        for batch in (1, 16):  # the embeddings request alone, one prompt per request or 16
            best = None
            for _ in range(2):
                t0 = time.perf_counter()
                for b in range(0, len(texts), batch):
                    _post(root + "/embeddings", {"model": server.alias, "input": texts[b : b + batch]
                                                 if batch > 1 else texts[b]})
                seconds = time.perf_counter() - t0
                best = seconds if best is None else min(best, seconds)
            rows.append({"setting": f"llama.cpp server, embeddings only, {batch} prompt(s) per request",
                         "seconds": best, "prompts_per_s": len(texts) / best})
            print(f"{rows[-1]['setting']}: {rows[-1]['prompts_per_s']:.2f} prompts/s", flush=True)
        for what, body in (("completion", {"max_tokens": 1, "temperature": 0, "logprobs": 20}),
                           ("embeddings", {})):  # one request's latency, median of 20
            times = []
            for text in texts[:20]:
                t0 = time.perf_counter()
                path = "/completions" if what == "completion" else "/embeddings"
                _post(root + path, {"model": server.alias, ("prompt" if what == "completion" else "input"): text,
                                    **body})
                times.append(time.perf_counter() - t0)
            times.sort()
            rows.append({"setting": f"one {what} request (median of 20)", "seconds": times[10]})

    import llama_cpp

    out = {"machine": machine_info(), "task": args.task, "n": len(test), "threads": args.threads,
           "llama_cpp_python": llama_cpp.__version__, "command": "python benchmarks/perf/server_speed.py "
           f"--task {args.task} --n {args.n} --threads {args.threads} --concurrency "
           f"{' '.join(map(str, args.concurrency))}", "rows": rows}
    (HERE / "results" / "server_speed.json").write_text(json.dumps(out, indent=2))
    ref = max(r["prompts_per_s"] for r in rows if r["setting"].startswith("in-process"))
    md = [f"# Reading prompts through the llama.cpp server vs in-process · {args.model} · {args.task}, {len(test)} "
          f"test prompts · {args.threads} threads", "", f"`{out['command']}`; machine: {json.dumps(out['machine'])}",
          "", "| setting | prompts/s | × fastest in-process | s |", "|---|---:|---:|---:|"]
    for r in rows:
        rate = r.get("prompts_per_s")
        md.append(f"| {r['setting']} | {rate:.2f} | {rate / ref:.2f} | {r['seconds']:.2f} |" if rate else
                  f"| {r['setting']} | – | – | {r['seconds']:.3f} |")
    (HERE / "results" / "server_speed.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
