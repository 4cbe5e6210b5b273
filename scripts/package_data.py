"""Build the task data that ships inside edgetune from the shared JSONL copies.

Usage:  python scripts/package_data.py [--source ../shared/data]

Writes ``src/edgetune/data/packaged/<task>/<split>.jsonl.xz`` for every task the registry names
(``edgetune.data.tasks.TASKS``) and ``SOURCES.md`` next to them (each source, commit, licence and
transformation, from the shared copies' README). Every file is the shared file byte for byte, compressed
with xz (the standard library's ``lzma``), so a few-shot sample drawn from the packaged data is the sample
drawn from the shared copies. One exception keeps the wheel small: a train pool over ``--max-mb`` (only
IMDB's 25,000 reviews, 32 MB) is replaced by a seeded random subset of ``--cap`` rows in the original
order; test sets are always whole. Rerunning it on the same source writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import re
import shutil
from pathlib import Path

from edgetune.data.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "edgetune" / "data" / "packaged"
CAP_SEED = 0


def compress(data: bytes) -> bytes:
    # no timestamps or names in an xz stream: the same input gives the same bytes
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)


def capped(data: bytes, cap: int) -> tuple[bytes, int]:
    lines = data.decode("utf-8").splitlines(keepends=True)
    if len(lines) <= cap:
        return data, len(lines)
    keep = sorted(random.Random(CAP_SEED).sample(range(len(lines)), cap))
    return "".join(lines[i] for i in keep).encode("utf-8"), len(lines)


def sections(readme: str) -> tuple[str, dict[str, str]]:
    """The README's general part (format, things to know) and its per-task sections."""
    head, _, tasks = readme.partition("\n## Tasks\n")
    parts = re.split(r"\n(?=### `)", tasks)
    by_task = {}
    for part in parts:
        m = re.match(r"### `([^`]+)`", part.strip())
        if m:
            by_task[m.group(1)] = part.strip()
    return head, by_task


def own_readme(folder: Path) -> str:
    """A task folder's own README without its title, its headings one level down (under the task's heading)."""
    body = (folder / "README.md").read_text(encoding="utf-8").split("\n", 1)[1].strip()
    return re.sub(r"^## ", "#### ", body, flags=re.M)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--max-mb", type=float, default=8.0, help="largest train pool shipped whole (MB)")
    ap.add_argument("--cap", type=int, default=5000, help="rows kept of a larger train pool")
    args = ap.parse_args()
    source = Path(args.source)
    head, by_task = sections((source / "README.md").read_text(encoding="utf-8"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    notes, total = [], 0
    for name in TASKS:
        folder = source / name
        if not folder.is_dir():
            raise SystemExit(f"{folder} is missing")
        (OUT / name).mkdir()
        for path in sorted(folder.glob("*.jsonl")):
            data = path.read_bytes()
            if path.stem == "train" and len(data) > args.max_mb * 1e6:
                data, rows = capped(data, args.cap)
                notes.append(f"- `{name}/train`: a seeded random subset (Python `random.Random({CAP_SEED})`, "
                             f"original order kept) of {args.cap:,} of its {rows:,} rows, to keep the wheel small; "
                             f"point `EDGETUNE_DATA_DIR` at the full copy to sample from all of them.")
            blob = compress(data)
            (OUT / name / f"{path.name}.xz").write_bytes(blob)
            total += len(blob)
    sources = ["# Task data shipped with edgetune", "",
               "Built by `scripts/package_data.py` from the shared JSONL copies described below (their README, "
               "quoted for the tasks edgetune names). Each split is that copy's file byte for byte, compressed "
               "with xz, except:", "", *notes, "",
               "**Licences.** The licence column names what each *source repository* states; the datasets "
               "themselves keep their original terms (e.g. SNLI CC BY-SA 4.0, IMDB's and Yelp's own terms), "
               "which a redistributor must check. `EDGETUNE_DATA_DIR` / `--data-dir` point edgetune at "
               "other copies instead.", "", head.strip().split("\n", 1)[1].strip(), "", "## Tasks", "",
               *[by_task[n] + "\n" for n in TASKS if n in by_task],
               # a task the shared README only lists (goemotions) documents itself in its folder's README
               *[f"### `{n}`\n\n" + own_readme(source / n) + "\n" for n in TASKS
                 if n not in by_task and (source / n / "README.md").is_file()]]
    (OUT / "SOURCES.md").write_text("\n".join(sources), encoding="utf-8")
    print(json.dumps({"tasks": len(TASKS), "bytes": total, "out": str(OUT)}))


if __name__ == "__main__":
    main()
