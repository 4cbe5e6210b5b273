"""The ``edgetune`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import EdgetuneError

RUNNABLE = {"dect": ("zeroshot", "calibrated", "linear_probe", "dect"), "zeroshot": ("zeroshot",),
            "calibrated": ("calibrated",), "linear_probe": ("linear_probe",)}
INPUT_EDGE = ("adept", "dept", "pt", "lora")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="packaged short name (see `edgetune models`), a local HF folder or a hub id")
    p.add_argument("--kind", choices=["causal", "masked", "seq2seq", "embedding"],
                   help="backbone kind (inferred from the config when omitted)")
    p.add_argument("--cache-dir", help="cache root (converted models, features); default $EDGETUNE_CACHE_DIR "
                   "or ~/.cache/edgetune")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per forward pass (default 32)")
    p.add_argument("--max-length", type=int, default=None,
                   help="token window; longer inputs are truncated, never the template (default min(1024, model))")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetune", description="Adapt a frozen language model at its edges.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a method and its baselines over tasks x shots x seeds",
                         description="Run METHOD on each task, shot count and seed; print per-seed accuracy and "
                         "mean ± std, and write the same as JSON. `run dect` also runs zero-shot, calibrated "
                         "zero-shot and a linear probe on the very same features.")
    run.add_argument("method", choices=sorted(RUNNABLE) + list(INPUT_EDGE),
                     help="dect (with its baselines), zeroshot, calibrated, linear_probe, or an input-edge method: "
                     "adept, dept, pt (prompt tuning), lora")
    run.add_argument("--task", nargs="+", default=None,
                     help="registry task name(s) or task .yaml file(s) (default sst2, or the files below)")
    run.add_argument("--shots", nargs="+", type=int, default=[16], help="examples per class (default 16)")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="sampling seeds (default 0-4)")
    run.add_argument("--test-size", type=int, default=None,
                     help="evaluate on a seeded random subset of this size (same subset for every method)")
    run.add_argument("--data-dir", help="task data root (default $EDGETUNE_DATA_DIR)")
    run.add_argument("--output", "-o", help="JSON results path (default results/<method>-<model>.json)")
    run.add_argument("--save-dir", help="also save each seed's trained decoder / adapter under this folder")
    byo = run.add_argument_group("bring your own data (instead of --task)")
    byo.add_argument("--train", help="train file (.jsonl, .csv, .tsv)")
    byo.add_argument("--test", help="test file (.jsonl, .csv, .tsv)")
    byo.add_argument("--template", help='prompt template, e.g. "{text} In summary, it was {mask}"')
    byo.add_argument("--label-words", help='LABEL:WORD pairs, e.g. "negative:bad,positive:great"')
    byo.add_argument("--text-col", default="text")
    byo.add_argument("--text-b-col", default=None)
    byo.add_argument("--label-col", default="label")
    dect = run.add_argument_group("DecT knobs")
    dect.add_argument("--lam", type=float, default=None, help="weight of the prompt scores (default 1/shots)")
    dect.add_argument("--epochs", type=int, default=None)
    dect.add_argument("--proto-dim", type=int, default=None)
    dect.add_argument("--lr", type=float, default=None)
    inp = run.add_argument_group("input-edge training (adept, dept, pt, lora)")
    inp.add_argument("--steps", type=int, default=None, help="optimizer steps (default 100)")
    inp.add_argument("--train-batch-size", type=int, default=None, help="examples per step (default 8)")
    inp.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps (default 1)")
    inp.add_argument("--prompt-tokens", type=int, default=None, help="soft-prompt length (ADePT/DePT 60, PT 100)")
    inp.add_argument("--budget-tokens", type=int, default=None,
                     help="trainable budget in prompt-tuning tokens (default 100 = 100 x hidden size)")
    _add_model_args(run)

    pred = sub.add_parser("predict", help="label texts with a saved model")
    pred.add_argument("path", help="folder written by save() or run --save-dir")
    pred.add_argument("texts", nargs="*", help="texts to label (or use --file)")
    pred.add_argument("--file", help="a .jsonl/.csv/.tsv file of inputs (labels not needed)")
    pred.add_argument("--text-col", default="text")
    pred.add_argument("--text-b-col", default=None)
    pred.add_argument("--json", action="store_true", help="print one JSON object per input with probabilities")
    pred.add_argument("--model", default=None, help="model to use (default: the one it was trained with)")
    pred.add_argument("--cache-dir")
    pred.add_argument("--no-progress", action="store_true")

    tasks = sub.add_parser("tasks", help="list registered tasks, templates and label words")
    tasks.add_argument("--data-dir", help="task data root (default $EDGETUNE_DATA_DIR), to show which have data")
    sub.add_parser("models", help="list packaged models and whether they are installed and converted")
    return parser


def _load_tasks(args: argparse.Namespace):
    from .data.tasks import custom_task, load_task

    if args.train or args.test:
        if not (args.train and args.test and args.template and args.label_words):
            raise EdgetuneError("bring-your-own data needs --train, --test, --template and --label-words")
        if args.task:
            raise EdgetuneError("give either --task or --train/--test, not both")
        cols = {"text": args.text_col, "label": args.label_col}
        if args.text_b_col:
            cols["text_b"] = args.text_b_col
        name = Path(args.train).stem
        return [custom_task(name, args.template, args.label_words, {"train": args.train, "test": args.test}, cols)]
    names = args.task or ["sst2"]
    return [load_task(n, args.data_dir, template=args.template, label_words=args.label_words) for n in names]


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .backends import load_backend
    from .bench.experiment import run_input_edge, run_output_edge, write_json
    from .bench.report import print_experiment
    from .methods import get_method

    tasks = _load_tasks(args)
    for t in tasks:  # fail on bad data before loading a model
        t.split_path("train")
        t.split_path("test")
    backend = load_backend(args.model, kind=args.kind, cache_root=args.cache_dir, batch_size=args.batch_size,
                           progress=not args.no_progress,
                           **({"max_length": args.max_length} if args.max_length else {}))
    experiments = []
    for task in tasks:
        for shots in args.shots:
            if args.method in INPUT_EDGE:
                accepted = get_method(args.method).param_names()  # e.g. LoRA has no prompt_tokens
                knobs = {k: v for k, v in {"steps": args.steps, "batch_size": args.train_batch_size,
                                           "grad_accum": args.grad_accum, "prompt_tokens": args.prompt_tokens,
                                           "budget_tokens": args.budget_tokens}.items()
                         if v is not None and k in accepted}
                knobs["progress"] = not args.no_progress
                exp = run_input_edge(task, backend, shots, args.seeds, [args.method], args.test_size,
                                     method_params={args.method: knobs}, save_dir=args.save_dir)
            else:
                knobs = {k: v for k, v in {"lam": args.lam, "epochs": args.epochs, "proto_dim": args.proto_dim,
                                           "lr": args.lr}.items() if v is not None}
                exp = run_output_edge(task, backend, shots, args.seeds, RUNNABLE[args.method], args.test_size,
                                      method_params={"dect": knobs}, save_dir=args.save_dir)
            print_experiment(exp, console)
            experiments.append(exp)
    out = args.output or f"results/{args.method}-{args.model.replace('/', '_')}.json"
    write_json(experiments, out)
    console.print(f"results written to {out}")
    return 0


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    from .backends import load_backend
    from .data.io import read_examples
    from .methods.base import load, read_saved

    config, _ = read_saved(args.path)
    model_name = args.model or config.get("model")
    kind = config.get("backend_kind")
    backend = load_backend(model_name, kind=kind, cache_root=args.cache_dir, progress=not args.no_progress)
    method = load(args.path, model=backend)
    if args.file:
        inputs = read_examples(args.file, text=args.text_col, text_b=args.text_b_col, require_label=False)
    elif args.texts:
        inputs = list(args.texts)
    else:
        inputs = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not inputs:
        raise EdgetuneError("no inputs: give texts, --file, or lines on standard input")
    probs = method.predict_proba(inputs)
    for i, row in enumerate(probs):
        label = method.labels_[int(row.argmax())]
        if args.json:
            text = inputs[i] if isinstance(inputs[i], str) else inputs[i].text
            probs = {lab: round(float(p), 6) for lab, p in zip(method.labels_, row, strict=True)}
            print(json.dumps({"text": text, "label": label, "probabilities": probs}))
        else:
            print(label)
    return 0


def cmd_tasks(args: argparse.Namespace, console: Console) -> int:
    from .data.tasks import TASKS
    from .paths import data_dir

    try:
        root = data_dir(args.data_dir)
    except EdgetuneError:
        root = None
    table = Table(title="edgetune tasks" + (f" (data: {root})" if root else " (no data dir set)"))
    for col in ("task", "labels → words", "template", "data"):
        table.add_column(col, overflow="fold")
    for t in TASKS.values():
        have = "-" if root is None else ", ".join(sorted(p.stem for p in (root / t.name).glob("*.jsonl"))) or "missing"
        words = ", ".join(f"{lab}→{w}" for lab, w in t.label_words.items())
        table.add_row(t.name, words, t.template, have)
    console.print(table)
    return 0


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from .backends.models import DEFAULT_MODEL, PACKAGED, converted_dir, is_installed

    table = Table(title="packaged models (any local HF folder or hub id works too)")
    for col in ("name", "kind", "installed", "converted", "description / install"):
        table.add_column(col, overflow="fold")
    for m in PACKAGED.values():
        inst = is_installed(m.name)
        conv = "n/a" if m.gguf is None else ("yes" if (converted_dir(m.name) / "config.json").is_file() else "no")
        name = m.name + (" (default)" if m.name == DEFAULT_MODEL else "")
        table.add_row(name, m.kind, "yes" if inst else "no", conv,
                      m.description + ("" if inst else f"\n{m.install}"))
    console.print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    warnings.filterwarnings("once")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # edgetune shows its own progress; keep stderr for errors
    try:
        return {"run": cmd_run, "predict": cmd_predict, "tasks": cmd_tasks, "models": cmd_models}[args.command](
            args, console)
    except EdgetuneError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted; features paid for so far are cached and will be reused")
        return 130


if __name__ == "__main__":
    sys.exit(main())
