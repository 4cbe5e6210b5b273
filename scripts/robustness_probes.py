"""Rerun the robustness review's command-line probes against the real default model, as a user types them.

Each probe is a real ``edgetune`` process (``R`` = ``edgetune run dect --task sst2 --shots 4 --seeds 0
--test-size 20``) in a fresh folder, with the user's model cache (the packaged SmolLM2, converted once) and,
where the probe touches it, a feature cache of its own. A probe passes when the process ends as documented:
exit 0 with the records intact, or exit 2 with a single ``error:`` line — never a traceback — and when what
the user paid for (records, cached answers, saved models) is still there. Writes
``benchmarks/results/robustness_probes.md`` (the table) and ``.json`` (every probe's exit code, time, stderr).

    python scripts/robustness_probes.py            # ~5 min on 2 CPU cores
    python scripts/robustness_probes.py --only 4 7  # some probes

The fault-injection tests (``tests/test_faults_*.py``) check the same behaviours on tiny random models, in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
R = ["run", "dect", "--task", "sst2", "--shots", "4", "--seeds", "0", "--test-size", "20", "--no-progress"]


@dataclass
class Result:
    code: int | None
    seconds: float
    out: str
    err: str


@dataclass
class Probe:
    id: str
    what: str
    run: Callable[[Path, dict[str, str]], tuple[bool, str, list[Result]]]
    results: list[Result] = field(default_factory=list)


def edgetune(argv: list, env: dict[str, str], cwd: Path, timeout: float = 600, background: bool = False):
    cmd = [sys.executable, "-m", "edgetune.cli", *map(str, argv)]
    if background:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, time.perf_counter() - start, proc.stdout, proc.stderr)


def one_line(r: Result, *words: str) -> bool:
    """Exit 2 with a single ``error:`` line containing ``words`` and no traceback."""
    lines = [x for x in r.err.strip().splitlines() if x.strip()]
    return (r.code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.err
            and all(w in r.err for w in words))


def ok(r: Result) -> bool:
    return r.code == 0 and "Traceback" not in r.err


def cells(folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip() and '"type": "cell"' in x]


def first_line(r: Result) -> str:
    return (r.err.strip().splitlines() or [""])[-1][:200]


# -- the probes --------------------------------------------------------------------------------------------

def p1(tmp: Path, env: dict[str, str]):
    """`R -o DIR` where DIR already holds records (here: another seed's) appends; nothing is deleted."""
    a = edgetune([*R, "--seeds", "1", "-o", tmp / "o"], env, tmp)
    before = (tmp / "o" / "results.jsonl").read_text()
    b = edgetune([*R, "-o", tmp / "o"], env, tmp)
    after = (tmp / "o" / "results.jsonl").read_text()
    again = edgetune([*R, "-o", tmp / "o"], env, tmp)
    good = ok(a) and ok(b) and ok(again) and after.startswith(before) and len(cells(tmp / "o")) == 8 and (
        "model queries: 0" in again.out)
    return good, f"kept {len(before.splitlines())} earlier lines, {len(cells(tmp / 'o'))} cells; rerun: 0 queries", [
        a, b, again]


def p2(tmp: Path, env: dict[str, str]):
    """Two `R -o DIR` at once (seeds 0 and 1)."""
    procs = [edgetune([*R, "--seeds", str(s), "-o", tmp / "o"], env, tmp, background=True) for s in (0, 1)]
    start = time.perf_counter()
    outs = [p.communicate(timeout=600) for p in procs]
    res = [Result(p.returncode, time.perf_counter() - start, o, e) for p, (o, e) in zip(procs, outs, strict=True)]
    seeds = sorted({c["seed"] for c in cells(tmp / "o")})
    report = (tmp / "o" / "report.md").read_text()
    good = all(ok(r) for r in res) and len(cells(tmp / "o")) == 8 and seeds == [0, 1] and "seeds: 0, 1" in report
    return good, f"{len(cells(tmp / 'o'))} cells (seeds {seeds}); report covers both", res


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    code = (f"import sqlite3, time; c = sqlite3.connect({str(db)!r}, isolation_level=None); "
            f"c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def warm_cache(tmp: Path, env: dict[str, str]) -> tuple[dict[str, str], Path, Result]:
    cache = tmp / "cache"
    (cache).mkdir()
    (cache / "models").symlink_to(Path(env["MODELS"]))  # the converted model, not the features
    env = {**env, "EDGETUNE_CACHE_DIR": str(cache)}
    return env, cache / "features.sqlite", edgetune([*R, "-o", tmp / "warm"], env, tmp)


def p3a(tmp: Path, env: dict[str, str]):
    """A warm feature cache locked by another process longer than the busy timeout."""
    env, db, warm = warm_cache(tmp, env)
    size = db.stat().st_size
    holder = hold_lock(db, 60)
    try:
        r = edgetune([*R, "--seeds", "1", "-o", tmp / "o"], {**env, "EDGETUNE_CACHE_TIMEOUT": "3"}, tmp)
    finally:
        holder.kill()
    aside = sorted(p.name for p in db.parent.glob("features.sqlite.*"))
    good = ok(warm) and r.code == 2 and "Traceback" not in r.err and "lock" in r.err and not aside and (
        db.stat().st_size >= size)
    return good, f"exit {r.code}: {first_line(r)}; nothing renamed", [warm, r]


def p3b(tmp: Path, env: dict[str, str]):
    """A read-only warm feature cache: the file and its folder made immutable (``chattr +i``, which stops root
    too), then a cached seed and a new one."""
    env, db, warm = warm_cache(tmp, env)
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    frozen = [*sorted(db.parent.glob("features.sqlite*")), db.parent]
    subprocess.run(["chattr", "+i", *map(str, frozen)], check=True)
    try:
        runs = [edgetune([*R, "--seeds", seed, "-o", tmp / f"o{seed}"], env, tmp) for seed in ("0", "1")]
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)
    aside = sorted(p.name for p in db.parent.glob("features.sqlite.*"))
    said = [x for x in runs[1].err.splitlines() if "read-only" in x]
    good = ok(warm) and all(ok(r) for r in runs) and not aside and "model queries: 0" in runs[0].out and bool(said)
    note = said[0][:170] if said else ""
    return good, f"exit {[r.code for r in runs]}; cached seed: 0 queries; new seed: {note!r}", [warm, *runs]


def p3c(tmp: Path, env: dict[str, str]):
    """A feature cache damaged past its first page."""
    env, db, warm = warm_cache(tmp, env)
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle + 8 : middle + 2 * page] = os.urandom(2 * page - 8)
    db.write_bytes(bytes(data))
    r = edgetune([*R, "-o", tmp / "o"], env, tmp)
    r2 = edgetune([*R, "-o", tmp / "o2"], env, tmp)
    aside = sorted(p.name for p in db.parent.glob("features.sqlite.damaged*"))
    good = ok(warm) and ok(r) and ok(r2) and len(aside) >= 1 and "damaged" in r.err
    return good, f"exit {r.code}, moved aside as {aside[:1]}; the next run: exit {r2.code}", [warm, r, r2]


def p3d(tmp: Path, env: dict[str, str]):
    """A cache folder under a regular file, and one that cannot be created."""
    blocker = tmp / "file"
    blocker.write_text("x")
    a = edgetune([*R, "--cache-dir", blocker / "cache", "-o", tmp / "o"], env, tmp)
    b = edgetune([*R, "--cache-dir", "/proc/edgetune-cache", "-o", tmp / "o"], env, tmp)
    good = one_line(a) and one_line(b) and blocker.read_text() == "x"
    return good, f"{first_line(a)} / {first_line(b)}", [a, b]


def p4(tmp: Path, env: dict[str, str]):
    """`R --lam nan`, `R --lr 1e308`."""
    a = edgetune([*R, "--lam", "nan", "-o", tmp / "o"], env, tmp)
    b = edgetune([*R, "--lr", "1e308", "-o", tmp / "o"], env, tmp)
    good = one_line(a, "lam") and one_line(b, "lr") and not (tmp / "o").exists() and max(a.seconds, b.seconds) < 20
    return good, f"{first_line(a)} ({a.seconds:.1f} s) / {first_line(b)}", [a, b]


def p5(tmp: Path, env: dict[str, str]):
    """A bench config whose two methods share a `label`."""
    cfg = tmp / "b.yaml"
    cfg.write_text("tasks: [sst2]\nshots: [4]\nseeds: [0]\ntest_size: 20\nmethods:\n"
                   "  - {name: zeroshot, label: zero-shot}\n  - {name: dect, label: zero-shot}\n")
    r = edgetune(["bench", cfg, "-o", tmp / "o", "--no-plots", "--no-progress"], env, tmp)
    return one_line(r, "used twice"), first_line(r), [r]


def p6(tmp: Path, env: dict[str, str]):
    """A task name with `../` in it, with --save-dir."""
    data = tmp / "d"
    data.mkdir()
    rows = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in
                   [("great fun", "pos"), ("a joy", "pos"), ("dull", "neg"), ("awful", "neg")] * 3)
    (data / "train.jsonl").write_text(rows)
    r = edgetune(["run", "dect", "--train", data / "train.jsonl", "--test", data / "train.jsonl", "--template",
                  "{text} It was {mask}", "--label-words", "neg:bad,pos:great", "--name", "../../escaped",
                  "--shots", "2", "--seeds", "0", "--no-progress", "-o", tmp / "o", "--save-dir", tmp / "s"], env, tmp)
    inside = sorted(p.name for p in (tmp / "s").iterdir()) if (tmp / "s").is_dir() else []
    escaped = list(tmp.parent.glob("escaped*")) + list(tmp.glob("escaped*"))
    return ok(r) and inside and not escaped, f"saved as s/{inside[0] if inside else '?'}", [r]


def p7(tmp: Path, env: dict[str, str]):
    """`R --seeds 0 0`; and a saved model whose labels were cut, then `predict --json`."""
    a = edgetune([*R, "--seeds", "0", "0", "-o", tmp / "o", "--save-dir", tmp / "s"], env, tmp)
    saved = tmp / "s" / "sst2-dect-4shot-seed0"
    config = json.loads((saved / "config.json").read_text())
    config["labels"] = config["labels"][:1]
    (saved / "config.json").write_text(json.dumps(config))
    b = edgetune(["predict", saved, "a fine film", "--json", "--no-progress"], env, tmp)
    good = ok(a) and len(cells(tmp / "o")) == 4 and "seeds: 0 ·" in (tmp / "o" / "report.md").read_text() and (
        one_line(b))
    return good, f"{len(cells(tmp / 'o'))} cells, one seed in the report; predict: {first_line(b)}", [a, b]


def p8(tmp: Path, env: dict[str, str]):
    """`-o` or `--save-dir` naming an existing file; `--seeds -1`, a 20-digit seed; `--batch-size 0 / -3`."""
    f = tmp / "f.txt"
    f.write_text("mine")
    rs = [edgetune([*R, "-o", f], env, tmp), edgetune([*R, "-o", tmp / "o", "--save-dir", f], env, tmp)]
    rs += [edgetune([*R, *extra, "-o", tmp / "o"], env, tmp) for extra in (
        ["--seeds", "-1"], ["--seeds", "12345678901234567890"], ["--batch-size", "0"], ["--batch-size", "-3"])]
    good = all(one_line(r) for r in rs) and f.read_text() == "mine" and not (tmp / "o" / "results.jsonl").exists()
    return good, f"{len(rs)} × exit 2, one line each (slowest {max(r.seconds for r in rs):.1f} s)", rs


def p9(tmp: Path, env: dict[str, str]):
    """A one-class train file without label words."""
    data = tmp / "d"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "only"}) + "\n"
                                              for i in range(8)))
    r = edgetune(["run", "dect", "--train", data / "train.jsonl", "--test", data / "train.jsonl", "--template",
                  "{text} {mask}", "--no-progress", "-o", tmp / "o"], env, tmp)
    return one_line(r, "only") and not (tmp / "o").exists(), first_line(r), [r]


def p10(tmp: Path, env: dict[str, str]):
    """`bench --report` on a non-UTF-8 file; a bench `test_size: all`."""
    f = tmp / "x.jsonl"
    f.write_bytes(b"\xff\xfe garbage\n")
    a = edgetune(["bench", "--report", f], env, tmp)
    cfg = tmp / "b.yaml"
    cfg.write_text("tasks: [rte]\nshots: [2]\nseeds: [0]\ntest_size: all\nmethods: [zeroshot]\n")
    b = edgetune(["bench", cfg, "-o", tmp / "o", "--no-plots", "--no-progress"], env, tmp)
    good = one_line(a, "UTF-8") and ok(b) and cells(tmp / "o")[0]["n_test"] == cells(tmp / "o")[0]["n_test_pool"]
    return good, f"{first_line(a)} / test_size all: exit {b.code}, n_test {cells(tmp / 'o')[0]['n_test']}", [a, b]


def p11(tmp: Path, env: dict[str, str]):
    """Saved configs tampered with: another method's name, an unknown model, `format: 99`."""
    a = edgetune([*R, "-o", tmp / "o", "--save-dir", tmp / "s"], env, tmp)
    saved = tmp / "s" / "sst2-dect-4shot-seed0"
    rs = []
    for change in ({"method": "linear_probe"}, {"model": "someone/unknown-model"}, {"format": 99}):
        copy = tmp / f"s-{next(iter(change))}"
        shutil.copytree(saved, copy)
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, **change}))
        rs.append(edgetune(["predict", copy, "a fine film", "--no-progress"], env, tmp))
    good = ok(a) and all(one_line(r) for r in rs) and max(r.seconds for r in rs) < 20
    return good, " / ".join(f"{first_line(r)} ({r.seconds:.1f} s)" for r in rs), [a, *rs]


def p12(tmp: Path, env: dict[str, str]):
    """A saved ADePT config with `rank = 1e9`."""
    a = edgetune(["run", "adept", "--task", "sst2", "--shots", "2", "--seeds", "0", "--test-size", "8", "--steps",
                  "2", "--no-progress", "-o", tmp / "o", "--save-dir", tmp / "s"], env, tmp)
    saved = tmp / "s" / "sst2-adept-2shot-seed0"
    config = json.loads((saved / "config.json").read_text())
    key = "rank" if "rank" in config.get("params", {}) else None
    config.setdefault("params", {})["rank"] = 10**9
    (saved / "config.json").write_text(json.dumps(config))
    b = edgetune(["predict", saved, "a fine film", "--no-progress"], env, tmp)
    return ok(a) and one_line(b) and b.seconds < 30, f"{first_line(b)} ({b.seconds:.1f} s; rank key {key})", [a, b]


def p13(tmp: Path, env: dict[str, str]):
    """`R` leaves no empty features.sqlite in its output folder; `--no-progress` draws no bars."""
    r = edgetune([*R, "-o", tmp / "o"], env, tmp)
    left = sorted(p.name for p in (tmp / "o").iterdir() if not p.name.startswith("."))
    bars = [x for x in r.err.splitlines() if "%|" in x or "━" in x]
    return ok(r) and left == ["report.md", "results.jsonl"] and not bars, f"output folder: {left}; bars: {len(bars)}", [
        r]


class _NotJson(BaseHTTPRequestHandler):
    def do_POST(self):
        body = b"<html>gateway says hi</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def p14(tmp: Path, env: dict[str, str]):
    """A server answering 200 with non-JSON; an unreachable server; `--max-retries -1`; `--timeout -5`."""
    server = HTTPServer(("127.0.0.1", 0), _NotJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    remote = ["--backend", "openai", "--model", "m", "-o", tmp / "o"]
    try:
        a = edgetune([*R, *remote, "--base-url", f"http://127.0.0.1:{server.server_port}/v1"], env, tmp)
    finally:
        server.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    b = edgetune([*R, *remote, "--base-url", f"http://127.0.0.1:{dead}/v1"], env, tmp)
    c = edgetune([*R, *remote, "--base-url", "http://127.0.0.1:1/v1", "--max-retries", "-1"], env, tmp)
    d = edgetune([*R, *remote, "--base-url", "http://127.0.0.1:1/v1", "--timeout", "-5"], env, tmp)
    good = one_line(a, "JSON") and b.code == 2 and "Traceback" not in b.err and b.seconds < 30 and one_line(c) and (
        one_line(d))
    return good, (f"non-JSON: {first_line(a)} / unreachable: exit {b.code} in {b.seconds:.1f} s / "
                  f"{first_line(c)} / {first_line(d)}"), [a, b, c, d]


def p15(tmp: Path, env: dict[str, str]):
    """`edgetune serve --host 0.0.0.0` without a key; `edgetune serve` on SIGTERM (its llama.cpp child)."""
    a = edgetune(["serve", "--host", "0.0.0.0"], env, tmp, timeout=60)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = edgetune(["serve", "--port", port], env, tmp, background=True)
    start = time.perf_counter()
    up = False
    while time.perf_counter() - start < 120 and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                up = True
                break
        except OSError:
            time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    time.sleep(0.5)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            freed = False
    except OSError:
        freed = True
    b = Result(proc.returncode, time.perf_counter() - start, out, err)
    good = one_line(a, "--api-key") and up and freed and "Traceback" not in err
    return good, f"{first_line(a)} / SIGTERM: exit {b.code}, port freed: {freed}", [a, b]


PROBES = [Probe("1", "`R -o DIR` over existing records", p1),
          Probe("2", "two `R -o DIR` at once", p2),
          Probe("3a", "feature cache locked by another process", p3a),
          Probe("3b", "read-only warm feature cache", p3b),
          Probe("3c", "feature cache damaged past its first page", p3c),
          Probe("3d", "cache folder under a file / not creatable", p3d),
          Probe("4", "`--lam nan`, `--lr 1e308`", p4),
          Probe("5", "two bench methods with one label", p5),
          Probe("6", "task name `../../escaped` with --save-dir", p6),
          Probe("7", "`--seeds 0 0`; saved labels cut, `predict --json`", p7),
          Probe("8", "-o / --save-dir a file; bad seeds; bad batch sizes", p8),
          Probe("9", "one-class train file, no label words", p9),
          Probe("10", "`bench --report` non-UTF-8; bench `test_size: all`", p10),
          Probe("11", "saved config: other method, unknown model, format 99", p11),
          Probe("12", "saved ADePT config with rank 1e9", p12),
          Probe("13", "no empty features.sqlite in -o; --no-progress", p13),
          Probe("14", "server: non-JSON 200, unreachable, bad retry/timeout flags", p14),
          Probe("15", "serve: --host 0.0.0.0; SIGTERM", p15)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="probe ids to run")
    args = parser.parse_args()
    from edgetune.backends.models import converted_dir
    from edgetune.paths import cache_dir

    converted_dir("smollm2-135m")  # the user cache must hold the converted model (run `edgetune run` once)
    env = {**os.environ, "MODELS": str(cache_dir() / "models"), "HF_HUB_OFFLINE": "1"}
    env.pop("EDGETUNE_DATA_DIR", None)  # the data installed with edgetune, as a user has it
    rows, raw = [], []
    for probe in PROBES:
        if args.only and probe.id not in args.only:
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f"probe{probe.id}-"))
        start = time.perf_counter()
        try:
            good, note, results = probe.run(tmp, env)
        except Exception as exc:  # a probe that could not even run is a failure, shown as such
            good, note, results = False, f"probe crashed: {type(exc).__name__}: {exc}", []
        seconds = time.perf_counter() - start
        tracebacks = sum("Traceback" in r.err for r in results)
        print(f"probe {probe.id}: {'PASS' if good else 'FAIL'} ({seconds:.0f} s) {note}", flush=True)
        rows.append(f"| {probe.id} | {probe.what} | {'pass' if good else '**FAIL**'} | {tracebacks} | "
                    f"{note.replace('|', '/')} |")
        raw.append({"id": probe.id, "what": probe.what, "pass": good, "note": note, "seconds": seconds,
                    "processes": [{"code": r.code, "seconds": round(r.seconds, 2), "stderr_tail": r.err[-600:]}
                                  for r in results]})
        shutil.rmtree(tmp, ignore_errors=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    md = ["# Robustness probes, rerun (`python scripts/robustness_probes.py`)", "",
          f"Real `edgetune` processes on the packaged SmolLM2-135M, `R` = `edgetune {' '.join(R[:10])}`; {machine}; "
          f"{time.strftime('%Y-%m-%d')}. What each probe was before, and the tests that keep it, are in "
          "[robustness.md](robustness.md).", "",
          "| probe | what | result | tracebacks | what happened |", "|---|---|---|---:|---|", *rows, ""]
    suffix = "" if not args.only else "_partial"
    (OUT / f"robustness_probes{suffix}.md").write_text("\n".join(md), encoding="utf-8")
    (OUT / f"robustness_probes{suffix}.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print(f"{sum(r['pass'] for r in raw)}/{len(raw)} probes pass")


if __name__ == "__main__":
    main()
