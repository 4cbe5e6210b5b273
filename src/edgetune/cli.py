"""The ``edgetune`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import EdgetuneError
from .metrics import ALL_METRICS

if TYPE_CHECKING:  # rich is imported when a command runs: parsing and --help stay fast
    from rich.console import Console

#: constructor parameters that `run` sets itself (or through its own flags) rather than as method options
RUN_OWNED = ("template", "label_words", "seed", "progress", "labels", "text_col", "text_b_col", "metric")
#: `edgetune run`'s default test subset: a first answer in about a minute on a laptop CPU
QUICK_TEST_SIZE = 200
#: --dtype's choices (backends.precision.DTYPES, which imports torch; a test keeps the two equal)
DTYPES = ("auto", "float32", "bfloat16", "float16")
ENGINES = ("completions", "chat", "tgi", "ollama")  # backends.remote.ENGINES, kept equal by a test (no import: fast)
#: method parameters whose flag would clash with a backend flag
FLAG_RENAMES = {"batch_size": "train-batch-size", "max_length": "train-max-length"}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="packaged short name (see `edgetune models`), a local HF folder or a hub id (default: the "
                   "method's own default model: smollm2-135m, or minilm-l6 for setfit)")
    p.add_argument("--kind", choices=["causal", "masked", "seq2seq", "embedding"],
                   help="backbone kind (inferred from the config when omitted)")
    p.add_argument("--cache-dir", help="cache root (converted models, features); default $EDGETUNE_CACHE_DIR "
                   "or ~/.cache/edgetune")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="prompts per forward pass (default 32)")
    p.add_argument("--max-length", type=_positive_int, default=None,
                   help="token window; longer inputs are truncated, never the template (default min(1024, model))")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="print the prompts, tokens and (through a server) requests the run would cost, and stop "
                   "before asking the model anything")
    p.add_argument("--device", default=None,
                   help="where an in-process model runs: cpu, cuda, cuda:1 … (default: a CUDA GPU if torch sees one)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="the format an in-process model runs in (default auto: bfloat16 on GPUs that support it and on "
                   "CPUs where a one-time probe finds it faster, e.g. AMX/AVX-512-BF16 Xeons; float32 elsewhere)")
    p.add_argument("--device-map", default=None, metavar="auto",
                   help="spread a model too large for one device over the GPUs and CPU memory (Accelerate's "
                   "device_map, e.g. auto); instead of --device")
    p.add_argument("--model-threads", type=_positive_int, default=None, metavar="N",
                   help="torch threads while the model reads prompts (default: chosen batch by batch from measured "
                   "speed: every core on a quiet machine, fewer beside busy processes)")
    remote = p.add_argument_group("model as a service (--backend openai)")
    remote.add_argument("--backend", choices=["local", "openai"], default="local",
                        help="local: run the model in this process (default); openai: query an OpenAI-compatible "
                        "server (--model is then the server's model name)")
    remote.add_argument("--base-url", help="server URL, e.g. http://127.0.0.1:8000/v1 (see `edgetune serve`)")
    remote.add_argument("--api-key", default=None, help="bearer token (default $OPENAI_API_KEY)")
    remote.add_argument("--engine", choices=ENGINES, default="completions",
                        help="the server's request shape: completions (any /v1/completions: llama.cpp, vLLM, "
                        "OpenAI's legacy models; default), chat (/v1/chat/completions), tgi "
                        "(text-generation-inference's /generate), ollama (/api/generate)")
    remote.add_argument("--top-logprobs", type=_positive_int, default=None,
                        help="next-token log-probabilities asked per prompt (default: the engine's cap, 20; 5 on "
                        "TGI and OpenAI's legacy completions)")
    remote.add_argument("--embeddings-url", default=None, metavar="URL",
                        help="another OpenAI-compatible server for the hidden representation, when --base-url serves "
                        "no embeddings of the same model (vLLM runs them as separate instances)")
    remote.add_argument("--embeddings-model", default=None, metavar="NAME",
                        help="the model name at --embeddings-url (default: --model)")
    remote.add_argument("--no-embeddings", action="store_true",
                        help="ask for label-word scores only: DecT then decodes those alone (no hidden "
                        "representation; one request per prompt instead of two)")
    remote.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight (default 8)")
    remote.add_argument("--rate-limit", type=_positive_float, default=None,
                        help="requests per second (default unlimited)")
    remote.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds per request (default 30)")
    remote.add_argument("--max-retries", type=_non_negative_int, default=6,
                        help="retries per request after a timeout, 429 or 5xx (default 6; a server that cannot be "
                        "reached fails after at most 2)")


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported as one ``error:`` line (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser. Given the arguments about to be parsed, ``run METHOD`` gets only that method's
    options built (every method is still listed), so ``--help`` and argument errors answer fast."""
    parser = _Parser(prog="edgetune", description="Adapt a frozen language model at its edges.")
    sub = parser.add_subparsers(dest="command", required=True)

    from .methods.configs import declarations

    methods = declarations()  # the methods' declarations: no method (and no torch) is imported to parse
    run = sub.add_parser("run", help="run a method (and its baselines) over tasks x shots x seeds",
                         description="Run METHOD on each task, shot count and seed; print per-seed accuracy and "
                         "mean ± std, and write the records (results.jsonl) and a report.md. `run dect` also runs "
                         "zero-shot, calibrated zero-shot and a linear probe on the very same features. "
                         "`edgetune run METHOD --help` lists METHOD's own options.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--task", nargs="+", default=None,
                        help="registry task name(s) or task .yaml file(s) (default sst2, or the files below)")
    common.add_argument("--shots", nargs="+", type=_positive_int, default=[16],
                        help="examples per class (default 16)")
    common.add_argument("--seeds", nargs="+", type=_seed, default=[0, 1, 2, 3, 4],
                        help="sampling seeds (default 0-4)")
    common.add_argument("--test-size", type=_test_size, default=QUICK_TEST_SIZE, metavar="N|all",
                        help=f"evaluate on a seeded random subset of N test examples, the same for every method "
                        f"(default {QUICK_TEST_SIZE}, for a first answer in about a minute; 'all' for the whole "
                        "test set)")
    common.add_argument("--metric", choices=ALL_METRICS, default="accuracy",
                        help="the measure the table shows (and auto optimises): accuracy (default), macro_f1 or "
                        "balanced_accuracy; records carry all three. Multi-label tasks: micro_f1 (shown by default), "
                        "macro_f1, samples_f1 or subset_accuracy")
    common.add_argument("--sample", choices=["per_class", "natural"], default="per_class",
                        help="per_class: --shots examples of every label (default); natural: --n examples at the "
                        "train pool's own label distribution, every label at least once")
    common.add_argument("--n", type=_positive_int, default=None,
                        help="examples drawn with --sample natural")
    common.add_argument("--data-dir", help="task data root (default $EDGETUNE_DATA_DIR, else the data installed "
                        "with edgetune)")
    common.add_argument("--output", "-o",
                        help="folder for results.jsonl and report.md (default results/<method>-<model>)")
    common.add_argument("--save-dir", help="also save each seed's fitted METHOD under this folder")
    byo = common.add_argument_group("bring your own data (instead of --task)")
    byo.add_argument("--train", help="train file (.jsonl, .csv, .tsv; .xz/.gz too) or a Hugging Face dataset "
                     "folder (save_to_disk; a DatasetDict's 'train' split)")
    byo.add_argument("--test", help="test file or Hugging Face dataset folder (a DatasetDict's 'test' split)")
    byo.add_argument("--name", help="task name in tables and records (default: the folder holding --train, or a "
                     "dataset folder's own name)")
    byo.add_argument("--template", help='prompt template, e.g. "{text} In summary, it was {mask}", or the number of '
                     "one of the task's templates (0: its main one; see `edgetune tasks`)")
    byo.add_argument("--label-words", help='LABEL:WORD pairs, e.g. "negative:bad,positive:great" (with --train: '
                     "optional; without it the labels are read from the train file and each label's readable name "
                     "is its word, e.g. transfer_money -> 'transfer money')")
    byo.add_argument("--text-col", default="text", help="column holding the text (default text)")
    byo.add_argument("--text-b-col", default=None, help="column holding a second text, for pair tasks")
    byo.add_argument("--label-col", default="label", help="column holding the label (default label; a JSONL file's "
                     "'labels' list when it has no 'label': multi-label)")
    byo.add_argument("--label-sep", default=None, help="multi-label CSV/TSV: the character joining several labels in "
                     "one label cell, e.g. '|' for 'billing|urgent' (JSONL: give a list instead)")
    _add_model_args(common)
    per_method = run.add_subparsers(dest="method", required=True, metavar="METHOD",
                                    parser_class=_Parser)
    args = list(argv) if argv is not None else None
    chosen = args[1] if args is not None and len(args) > 1 and args[0] == "run" and args[1] in methods else None
    for name, config in methods.items():
        label = f"{config.display_name} ({config.edge} edge)"
        if chosen is not None and name != chosen:
            per_method.add_parser(name, help=label)  # listed; its options are built when it is the one run
            continue
        p = per_method.add_parser(name, parents=[common], help=label,
                                  description=f"Run {label} and write its records and report.")
        _add_method_options(p, config, [methods[c] for c in config.companions if c in methods])

    pred = sub.add_parser("predict", help="label texts with a saved model")
    pred.add_argument("path", help="folder written by save() or run --save-dir")
    pred.add_argument("texts", nargs="*", help="texts to label (or use --file)")
    pred.add_argument("--file", help="a .jsonl/.csv/.tsv file of inputs (labels not needed)")
    pred.add_argument("--text-col", default="text")
    pred.add_argument("--text-b-col", default=None)
    pred.add_argument("--json", action="store_true", help="print one JSON object per input with probabilities")
    pred.add_argument("--label-sep", dest="label_sep_out", default="|", help="a multi-label model's output: what "
                      "joins a text's labels on its line (default |; --json gives a list)")
    pred.add_argument("--model", default=None, help="model to use (default: the one it was trained with)")
    pred.add_argument("--cache-dir")
    pred.add_argument("--base-url", help="server URL, for a decoder trained with --backend openai")
    pred.add_argument("--api-key", default=None, help="bearer token (default $OPENAI_API_KEY)")
    pred.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                      help="label the inputs with Ray Data, one model per CPU of the cluster at ADDRESS (default: a "
                      "local Ray instance); needs pip install 'edgetune[ray]'")
    pred.add_argument("--no-progress", action="store_true")

    bench = sub.add_parser("bench", help="run a grid of tasks x methods x shots x seeds x models from a YAML config",
                           description="Run every cell of CONFIG.yaml not yet in OUTPUT/results.jsonl (so an "
                           "interrupted bench resumes), then write OUTPUT/report.md and PNG plots. With --report, "
                           "only re-render the report from a results file.")
    bench.add_argument("config", nargs="?", help="bench config (see benchmarks/*.yaml)")
    bench.add_argument("--output", "-o", help="output folder (default: the config's `output`, else "
                       "results/bench/<name>)")
    bench.add_argument("--report", nargs="+", metavar="RESULTS.jsonl", help="re-render the report and plots from "
                       "stored results; several files (each PATH or NAME=PATH) make one report into -o, each cell "
                       "shown with its source's name; --tasks/--seeds/--methods keep only those cells")
    bench.add_argument("--data-dir", help="task data root (default: the config's data_dir, else "
                       "$EDGETUNE_DATA_DIR, else the data installed with edgetune)")
    bench.add_argument("--no-plots", action="store_true", help="Markdown only")
    bench.add_argument("--per-class", action="store_true", help="add precision and recall per label and a "
                       "confusion-matrix plot per task and method to the report")
    bench.add_argument("--cache", metavar="FEATURES.sqlite", help="the feature cache to read and fill (default: "
                       "features.sqlite beside the results; a config's cache: cold makes a fresh one)")
    bench.add_argument("--tasks", nargs="+", metavar="TASK", help="run only these tasks of the grid now")
    bench.add_argument("--seeds", nargs="+", type=_seed, metavar="SEED", help="run only these seeds now")
    bench.add_argument("--methods", nargs="+", metavar="LABEL", help="run only these method labels now "
                       "(the report still covers every finished cell; rerun without them for the rest)")
    bench.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="run the grid's samples on N local processes, each with its share of the cores (default "
                       "1); records are written by this process alone")
    bench.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="run the grid's samples as Ray tasks on the cluster at ADDRESS (default: a local Ray "
                       "instance); needs pip install 'edgetune[ray]'")
    bench.add_argument("--no-progress", action="store_true")

    serve = sub.add_parser("serve", help="serve a packaged GGUF model with llama.cpp's OpenAI-compatible server",
                           description="Start llama-cpp-python's server on a packaged model (or a .gguf file) with "
                           "completions (log-probabilities) and embeddings enabled, and keep it running until "
                           "Ctrl-C or SIGTERM, which stop the server too (exit status 0). Then: edgetune run dect "
                           "--backend openai --base-url URL --model NAME.")
    serve.add_argument("--model", default="smollm2-135m", help="packaged model name or .gguf path")
    serve.add_argument("--host", default="127.0.0.1",
                       help="bind address (default loopback; any other needs --api-key or --insecure)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0: a free one)")
    serve.add_argument("--n-ctx", type=_positive_int, default=2048, help="context window (default 2048)")
    serve.add_argument("--threads", type=_positive_int, default=None,
                       help="CPU threads (default: llama.cpp's choice)")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help="require this bearer token on every request (clients pass the same --api-key)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --host without --api-key (anyone who reaches it can use it)")

    tasks = sub.add_parser("tasks", help="list registered tasks, templates and label words")
    tasks.add_argument("--data-dir", help="task data root (default $EDGETUNE_DATA_DIR, else the data installed "
                       "with edgetune), to show which have data")
    sub.add_parser("models", help="list packaged models and whether they are installed and converted")
    return parser


def _load_tasks(args: argparse.Namespace):
    from .data.tasks import custom_task, load_task

    if args.label_sep is not None and not args.train:
        raise EdgetuneError("--label-sep reads your own CSV/TSV files (--train/--test); a registry task knows its "
                            "labels")
    if args.label_sep is not None and not args.label_sep:
        raise EdgetuneError("--label-sep must be a character such as '|', not empty")
    if args.train or args.test:
        if not (args.train and args.test and args.template):
            raise EdgetuneError("bring-your-own data needs --train, --test and --template (and --label-words, "
                                "unless the label names themselves are the words)")
        if args.task:
            raise EdgetuneError("give either --task or --train/--test, not both")
        cols = {"text": args.text_col, "label": args.label_col}
        if args.text_b_col:
            cols["text_b"] = args.text_b_col
        train = Path(args.train).resolve()  # a file: the folder holding it; a saved HF dataset: its folder
        name = args.name or (train.name if train.is_dir() else train.parent.name) or train.stem
        return [custom_task(name, args.template, args.label_words, {"train": args.train, "test": args.test}, cols,
                            label_sep=args.label_sep)]
    names = args.task or ["sst2"]
    return [load_task(n, args.data_dir, template=args.template, label_words=args.label_words) for n in names]


def _add_method_options(parser: argparse.ArgumentParser, config: Any, companions: list[Any]) -> None:
    """One flag per parameter the method declares, with its one line of help and its default; then the
    parameters only its companions take (``run dect`` also runs them). A deprecated spelling is accepted with a
    warning and not listed."""
    group = parser.add_argument_group(f"{config.name} options")
    seen: set[str] = set()
    for owner in (config, *companions):
        if owner is not config:
            group = parser.add_argument_group(f"options of {owner.display_name} (run beside it)")
        for info in owner.params().values():
            if info.name in RUN_OWNED or info.name in seen:
                continue
            seen.add(info.name)
            kwargs: dict[str, Any] = {"dest": f"m_{info.name}", "default": None,
                                      "help": f"{info.help} (default {_show_default(info.default)})"}
            if info.kind == "flag":
                kwargs["action"] = argparse.BooleanOptionalAction
            elif info.kind == "list":
                kwargs.update(nargs="+", type=_cli_value, metavar="VALUE")
            else:
                kwargs.update(type=_cli_value, metavar=info.name.upper())
            group.add_argument(_flag(info.name), **kwargs)
        for old, new in owner.aliases.items():
            if old not in seen and new in seen:
                seen.add(old)
                parser.add_argument(_flag(old), dest=f"m_{new}", type=_cli_value, default=None,
                                    action=_renamed(_flag(old), _flag(new)), help=argparse.SUPPRESS)


def _flag(name: str) -> str:
    return "--" + FLAG_RENAMES.get(name, name.replace("_", "-"))


def _renamed(old: str, new: str) -> type[argparse.Action]:
    """An argparse action for a deprecated flag: stores under the new name, with a warning."""

    class Renamed(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
            warnings.warn(f"{old} is renamed {new}; the old name will be removed in the next release",
                          FutureWarning, stacklevel=2)
            setattr(namespace, self.dest, values)

    return Renamed


def _whole(least: int, most: int | None = None, name: str = "", allow_all: bool = False) -> Callable[[str], Any]:
    """An argparse type for a whole number from ``least`` (to ``most``), or ``None`` for 'all' where
    ``allow_all``: a bad value is one line and exit 2, naming the value and the range."""

    def parse(text: str) -> int | None:
        if allow_all and text.strip().lower() in ("all", "full", "none"):
            return None
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < least or (most is not None and value > most):
            span = f"from {least} to {most}" if most is not None else f"≥ {least}"
            what = f"a {name} is a whole number" if name else "expected a whole number"
            raise argparse.ArgumentTypeError(f"{what} {span}{' or ' + repr('all') if allow_all else ''}, not {text!r}")
        return value

    return parse


_positive_int = _whole(1)
_non_negative_int = _whole(0)
_seed = _whole(0, 2**32 - 1, "seed")
_port = _whole(0, 65535, "port")
_test_size = _whole(1, allow_all=True)


def _show_default(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _cli_value(text: str) -> Any:
    """A flag value as the method expects it: an int, a float, a bool, none, or the text itself."""
    from .methods.core.config import value_from_text

    return value_from_text(text)


def _knobs(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The method options given on the command line that method ``name`` takes."""
    from .methods.configs import declarations

    knobs = {}
    for pname in declarations()[name].param_names():
        value = getattr(args, f"m_{pname}", None)
        if value is not None and pname not in RUN_OWNED:
            knobs[pname] = value
    return knobs


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    import uuid

    from .bench.config import BenchConfig, MethodEntry
    from .bench.records import read_results
    from .bench.report import lines_of_run, print_run, render
    from .bench.runner import check_run, run_bench
    from .data.templates import Template
    from .methods import get_method
    from .paths import safe_name

    cls = get_method(args.method)
    tasks = _load_tasks(args)
    for t in tasks:  # fail on bad data or a template that does not fit it before loading a model
        t.split_path("train")
        t.split_path("test")
        first = t.load("train", limit=1)[0]
        for text in t.all_templates:  # a bad one among several is named
            Template(text).render(first)
        if t.derived_words_note():
            print(t.derived_words_note(), file=sys.stderr)
    model = args.model or cls.default_model
    companions = cls.companions
    if any(t.multi_label for t in tasks):  # several labels per text: only the methods that fit them
        from .methods.configs import declarations, multi_label_methods

        if not cls.multi_label:
            raise EdgetuneError(f"{cls.name} fits one label per text; {tasks[0].name} is multi-label (several labels "
                                f"per text). Methods that fit multi-label data: {', '.join(multi_label_methods())}")
        companions = tuple(n for n in companions if declarations()[n].multi_label)
    entries = [MethodEntry(n, n, _knobs(args, n)) for n in (*companions, cls.name)]
    for entry in entries:  # --metric is what a method that optimises a measure (auto) optimises
        if "metric" in get_method(entry.name).param_names() and args.metric != "accuracy":
            entry.params["metric"] = args.metric
    for entry in entries:  # a parameter no run can use is refused before the model loads
        entry.check()
    out = Path(args.output or f"results/{args.method}-{safe_name(model)}")
    for flag, values in (("--seeds", args.seeds), ("--shots", args.shots)):
        if len(set(values)) < len(values):
            print(f"note: {flag} lists a value twice; each runs once", file=sys.stderr)
    shots = args.shots
    if args.sample == "natural":
        if args.n is None:
            raise EdgetuneError("--sample natural needs --n N (examples in all, e.g. --n 64)")
        shots = [args.n]
        from .data.sampling import check_natural_size

        for t in tasks:  # fewer examples than labels: one line before any model loads
            check_natural_size(t.name, args.n, len(t.labels))
    elif args.n is not None:
        raise EdgetuneError("--n is for --sample natural; with per-class samples give --shots")
    config = BenchConfig(name=f"run {args.method}", tasks=list(tasks), methods=entries, models=[model],
                         shots=shots, seeds=args.seeds, test_size=args.test_size, sample=args.sample)
    save_labels = {cls.name}
    check_run(config, out, args.save_dir, save_labels)  # output, earlier records, save folder: before loading
    backend = _backend(args, model, cls)
    if args.dry_run:
        try:
            return _dry_run(config, backend, cls, console)
        finally:
            backend.cache.close()
    from rich.console import Console

    quiet = Console(stderr=True, quiet=args.no_progress)  # the runner's per-cell lines
    run_id = uuid.uuid4().hex[:12]
    try:
        results = run_bench(config, output=out, progress=not args.no_progress, console=quiet,
                            backends={model: backend}, save_dir=args.save_dir, save_labels=save_labels, run_id=run_id)
    finally:
        backend.cache.close()  # at once, not when the backend is collected: the cache is whole when run returns
    from .distributed import is_main

    if not is_main():  # under a launcher rank 0 reports
        return 0
    print_run(lines_of_run(read_results(results), config, run_id), console, metric=args.metric)
    report = render(results, plots=False)
    console.print(f"records: {results} · report: {report}")
    return 0


def _dry_run(config: Any, backend: Any, cls: Any, console: Console) -> int:
    """What ``run`` would cost, without asking the model anything: per task, the distinct prompts it would read
    (every seed's training sample and the test subset, through the method's own template), how many the feature
    cache already holds (free), their tokens (a local model's tokenizer; through a server: characters / 4, an
    estimate) and, through a server, the requests (one completion, plus one embeddings request unless
    --no-embeddings, per prompt; recovering a label word outside the top log-probabilities adds up to one request
    per word). Input-edge methods and SetFit also run the model on every training step: see their --steps."""
    from .bench.runner import _eval_split, few_shot_sample
    from .data.templates import Template

    remote = backend.kind == "openai"
    total = {"prompts": 0, "cached": 0, "tokens": 0, "words": 0}
    for task in (config.load_task(t) for t in config.tasks):
        test, _, rest = _eval_split(config, task)
        template, words = Template(task.template), task.words
        total["words"] = max(total["words"], len(words))
        examples = list(test)
        for shots in config.shots:
            for seed in config.seeds:
                examples += list(few_shot_sample(config, task, rest, shots, seed))
        prompts = {p.key(): p for p in (template.render(e) for e in examples)}
        keys = {backend.key(p, words): p for p in prompts.values()}
        cached = len(backend.cache.get_many(list(keys))) if backend.cache is not None else 0
        if remote:
            tokens = sum(len(p.text_before) for p in prompts.values()) // 4
        else:
            tokens = sum(len(backend.prompt_ids(p)) for p in prompts.values())
        console.print(f"{task.name}: {len(prompts)} distinct prompts ({len(test)} test, the rest {len(config.seeds)} "
                      f"seed(s) × {', '.join(map(str, config.shots))} shots), {cached} already cached, "
                      f"{'~' if remote else ''}{tokens:,} prompt tokens")
        total["prompts"] += len(prompts)
        total["cached"] += cached
        total["tokens"] += tokens
    paid = total["prompts"] - total["cached"]
    line = f"dry run, nothing asked: {paid} prompts to query ({total['cached']} cached)"
    if remote:
        per = 2 if backend.hidden else 1
        extra = (f"label words outside the top {backend.top_logprobs} are floored: Ollama has no exact way"
                 if backend.engine == "ollama" else
                 f"+ up to {total['words']} per prompt if label words fall outside the top {backend.top_logprobs}")
        line += (f", {per * paid} requests to {backend.base_url} ({extra}), ~{total['tokens'] * per:,} prompt tokens "
                 "in all")
    else:
        line += f", {total['tokens']:,} prompt tokens through {backend.name}"
    if cls.edge != "output":
        line += f"; {cls.name} also runs the model on every training step"
    console.print(line)
    return 0


def _positive_float(text: str) -> float:
    """A finite number > 0 (argparse type: a bad value is one line and exit 2)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, not {text!r}")
    return value


def _remote_backend(model: str, args: argparse.Namespace, **settings):
    """An OpenAI-compatible backend from the shared --base-url / --api-key / --cache-dir options."""
    import os

    from .backends import load_backend

    return load_backend(model, base_url=args.base_url, cache_root=args.cache_dir,
                        api_key=args.api_key or os.environ.get("OPENAI_API_KEY"), progress=not args.no_progress,
                        **settings)


def _backend(args: argparse.Namespace, model: str, cls: Any):
    """The backend ``cls`` runs on: the model by name (in-process), or a remote server for methods that
    need only features."""
    from .backends import load_backend

    if args.backend == "openai":
        if cls.needs != "features":
            raise EdgetuneError(f"{cls.name} needs the model's weights in this process (needs: {cls.needs}); "
                                "use --backend local")
        if not args.base_url:
            raise EdgetuneError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if args.no_embeddings and (args.embeddings_url or args.embeddings_model):
            raise EdgetuneError("--no-embeddings asks for no hidden representation; drop --embeddings-url/-model")
        if args.no_embeddings and cls.name not in ("zeroshot", "calibrated"):
            print(f"note: --no-embeddings: {cls.name} sees label-word scores only (no hidden representation)",
                  file=sys.stderr)
        return _remote_backend(model, args, top_logprobs=args.top_logprobs, engine=args.engine,
                               concurrency=args.concurrency,
                               rate_limit=args.rate_limit, timeout=args.timeout, max_retries=args.max_retries,
                               hidden=not args.no_embeddings, embeddings_url=args.embeddings_url,
                               embeddings_model=args.embeddings_model)
    if args.base_url or args.embeddings_url or args.embeddings_model or args.no_embeddings or (
            args.engine != "completions"):
        raise EdgetuneError("--base-url, --engine, --embeddings-url/-model and --no-embeddings are for "
                            "--backend openai")
    kind = args.kind or ("embedding" if cls.needs == "encoder" else None)
    if args.device_map and args.device:
        raise EdgetuneError("give either --device or --device-map, not both")
    if kind == "embedding" and args.device_map:
        raise EdgetuneError("--device-map is for language models; an embedding model runs on one device (--device)")
    placement = {"device_map": args.device_map} if args.device_map else {}
    return load_backend(model, kind=kind, cache_root=args.cache_dir, batch_size=args.batch_size,
                        progress=not args.no_progress, device=args.device, dtype=args.dtype,
                        **({"threads": args.model_threads} if args.model_threads else {}), **placement,
                        **({"max_length": args.max_length} if args.max_length else {}))


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from .bench.config import BenchConfig
    from .bench.report import render
    from .bench.runner import run_bench

    if args.report:
        if args.config:
            raise EdgetuneError("give either CONFIG.yaml (run, then report) or --report RESULTS.jsonl, not both")
        path = render(args.report, out_dir=args.output, plots=not args.no_plots, tasks=args.tasks,
                      seeds=args.seeds, methods=args.methods, per_class=args.per_class)
        console.print(f"report written to {path}")
        return 0
    if not args.config:
        raise EdgetuneError("give a bench config (CONFIG.yaml) or --report RESULTS.jsonl")
    config = BenchConfig.from_yaml(args.config)
    if args.data_dir:
        config.data_dir = args.data_dir
    if args.tasks or args.seeds or args.methods:
        config = config.narrowed(args.tasks, args.seeds, args.methods)
    cache = None
    if args.cache:
        from .backends import FeatureCache

        cache = FeatureCache(args.cache)
    try:
        if args.ray is not None and args.workers > 1:
            raise EdgetuneError("give --workers N (local processes) or --ray (Ray tasks), not both")
        results = run_bench(config, output=args.output, progress=not args.no_progress, console=console, cache=cache,
                            workers=args.workers, ray=args.ray is not None, ray_address=args.ray or None)
    finally:
        if cache is not None:
            cache.close()
    from .distributed import is_main

    if not is_main():  # under a launcher rank 0 reports
        return 0
    path = render(results, plots=not args.no_plots, per_class=args.per_class)
    console.print(f"results: {results}\nreport: {path}")
    return 0


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    """Serve until Ctrl-C, SIGTERM or SIGHUP, which stop the llama.cpp child too (exit 0); exit 2 if the child
    stops by itself or does not start."""
    import signal

    from .backends.server import LlamaServer

    server = LlamaServer(args.model, host=args.host, port=args.port, n_ctx=args.n_ctx, n_threads=args.threads,
                         api_key=args.api_key, insecure=args.insecure)
    console.print(f"starting llama.cpp server for {args.model} (log: {server.log_path}) ...")
    key = " --api-key KEY" if args.api_key else ""
    signum = server.run_until_signal(lambda: console.print(
        f"serving [bold]{server.alias}[/] at {server.base_url} — try:\n  edgetune run dect --backend openai "
        f"--base-url {server.base_url} --model {server.alias}{key}\nCtrl-C stops it.", highlight=False))
    if signum is None:
        raise EdgetuneError(f"the server stopped (exit code {server.returncode}):\n{server.log_tail()}")
    console.print(f"stopped the server ({signal.Signals(signum).name})")
    return 0


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    import os

    from .backends import load_backend
    from .data.io import read_examples
    from .methods.core.persistence import load, read_saved, saved_backend_options

    config, _ = read_saved(args.path)
    model_name = args.model or config.get("model")
    options = saved_backend_options(config)  # the backend's own recorded settings, e.g. an embedding scale
    if options.get("kind") == "openai":
        if not args.base_url:
            raise EdgetuneError(f"{args.path} was trained through a server (model {model_name!r}); give --base-url")
        options.pop("kind")
        options.update(base_url=args.base_url, api_key=args.api_key or os.environ.get("OPENAI_API_KEY"))
    elif args.base_url:
        raise EdgetuneError(f"{args.path} was trained on an in-process model; --base-url is for decoders "
                            "trained through a server")
    options.update(model=model_name, cache_root=args.cache_dir, progress=not args.no_progress)
    if args.ray is None:
        method = load(args.path, model=load_backend(**options))
    if args.file:
        inputs = read_examples(args.file, text=args.text_col, text_b=args.text_b_col, require_label=False)
    elif args.texts:
        inputs = list(args.texts)
    else:
        inputs = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not inputs:
        raise EdgetuneError("no inputs: give texts, --file, or lines on standard input")
    if args.ray is not None:
        from .bench.workers import predict_with_ray

        labels = list(config["labels"])
        probs = predict_with_ray(args.path, {**options, "progress": False}, inputs, address=args.ray or None)
    else:
        labels, probs = list(method.labels_), method.predict_proba(inputs)
    multi = config.get("multi_label")
    if multi:  # several labels per text: each label whose probability reaches the saved threshold
        from .methods.core.multilabel import decide

        chosen = decide(probs, multi["thresholds"], bool(multi.get("allow_empty")))
    for i, row in enumerate(probs):
        text = inputs[i] if isinstance(inputs[i], str) else inputs[i].text
        if multi:
            names = [lab for lab, on in zip(labels, chosen[i], strict=True) if on]
            per_label = {lab: round(float(p), 6) for lab, p in zip(labels, row, strict=True)}
            print(json.dumps({"text": text, "labels": names, "probabilities": per_label}) if args.json
                  else args.label_sep_out.join(names))
            continue
        label = labels[int(row.argmax())]
        if args.json:
            probs_of = {lab: round(float(p), 6) for lab, p in zip(labels, row, strict=True)}
            print(json.dumps({"text": text, "label": label, "probabilities": probs_of}))
        else:
            print(label)
    return 0


def cmd_tasks(args: argparse.Namespace, console: Console) -> int:
    from .data.tasks import TASKS
    from .paths import PACKAGED_DATA, data_dir

    try:
        root = data_dir(args.data_dir)
    except EdgetuneError:
        root = None
    where = "installed with edgetune; sources and licences in SOURCES.md there" if root == PACKAGED_DATA else ""
    from rich.table import Table

    table = Table(title="edgetune tasks" + (f" (data: {root}{'; ' + where if where else ''})" if root
                                            else " (no data dir)"))
    for col in ("task", "labels → words", "template", "data"):
        table.add_column(col, overflow="fold")
    for t in TASKS.values():
        splits = sorted({p.name.split(".")[0] for p in (root / t.name).glob("*.jsonl*")}) if root else []
        have = "-" if root is None else ", ".join(splits) or "missing"
        words = ", ".join(f"{lab}→{w}" for lab, w in t.label_words.items())
        table.add_row(t.name, words, t.template, have)
    console.print(table)
    return 0


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

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


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """A warning as one ``warning:`` line on standard error (not Python's file:line and source line)."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _format_warning  # one line, from parsing on (a deprecated flag warns while parsing)
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "predict" and not any(x.startswith("-") for x in extra):
        args.texts += extra  # texts after options: `edgetune predict DIR --json "a text"`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from rich.console import Console

    console = Console()
    err = Console(stderr=True)
    warnings.filterwarnings("once")  # (a recorder of warnings, e.g. a test, still gets them whole)
    if args.command in ("run", "predict", "bench"):  # commands that load a model (others stay torch-free)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # edgetune shows its own progress; keep stderr for errors
    try:
        return {"run": cmd_run, "predict": cmd_predict, "tasks": cmd_tasks, "models": cmd_models,
                "serve": cmd_serve, "bench": cmd_bench}[args.command](
            args, console)
    except EdgetuneError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted; features paid for so far are cached and will be reused")
        return 130


if __name__ == "__main__":
    sys.exit(main())
