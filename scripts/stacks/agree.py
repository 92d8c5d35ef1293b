"""Load an export with the stack's own loader (in the stack's venv) and compare what it trains with the build.

    python scripts/stacks/agree.py STACK OUT [--json FILE] [--show N]

STACK's venv is made once by `scripts/stacks/STACK.sh` (under ${FTDATA_STACKS:-~/.cache/ftdata/stacks}); OUT is a
build folder with `ftdata export OUT --to STACK` done. Prints, per mode, the rows, the trained tokens on both
sides and the rows that differ (the first --show of them, with where they part); --json writes it all.
Exit status: 0 when every row agrees, 1 when some differ, 2 when the venv or the export is missing.
Run with ftdata's own Python from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from ftdata.build.exports import PREFIX, STACKS  # noqa: E402
from ftdata.build.exports.agreement import Agreement, compare_records, compare_rows  # noqa: E402
from ftdata.build.exports.rows import token_rows  # noqa: E402
from ftdata.build.load import load  # noqa: E402


def venv(stack: str) -> Path | None:
    """The stack's complete venv, or None."""
    root = Path(os.environ.get("FTDATA_STACKS", Path.home() / ".cache/ftdata/stacks"))
    found = sorted(p.parent for p in root.glob(f"{stack}-*/.complete"))
    return found[-1] if found else None


def read(stack: str, export: Path, tokenizer: str) -> list[dict]:
    """Rows as the stack's own loader gives them (`read_<stack>.py` in its venv)."""
    where = venv(stack)
    if where is None:
        raise SystemExit(f"no venv for {stack}: make it with scripts/stacks/{stack}.sh")
    script = HERE / f"read_{stack.replace('-', '_')}.py"
    done = subprocess.run(
        [str(where / "bin/python"), str(script), str(export), tokenizer],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    if done.returncode != 0:
        raise SystemExit(f"{script.name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def agreements(stack: str, out: Path) -> list[Agreement]:
    """Every mode the stack's reader reports, compared with the build in `out`."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    built = load(out)
    export = out / (PREFIX + stack)
    manifest = json.loads((export / "export.json").read_text(encoding="utf-8"))
    if manifest.get("fingerprint") != (built.manifest or {}).get("fingerprint"):
        raise SystemExit(f"{export} was written from another build: export again")
    tokenizer = next(i.get("path") or i["name"] for i in built.manifest["inputs"] if i["kind"] == "tokenizer")
    tok = AutoTokenizer.from_pretrained(tokenizer)
    splits = dict(built.dataset) if isinstance(built.dataset, dict) else {"train": built.dataset}
    ours = list(token_rows(splits["train"]))
    got = read(stack, export, tokenizer)
    modes: dict[str, list[dict]] = {}
    for row in got:
        modes.setdefault(row.get("mode", "export"), []).append(row)
    results = []
    for mode, rows in modes.items():
        if STACKS[stack].kind == "text":
            records = [
                str(r) for r in pq.read_table(export / "train.parquet", columns=["record"])["record"].to_pylist()
            ]
            results.append(compare_records(stack, ours, rows, records, decode=tok.decode, mode=mode))
        else:
            results.append(compare_rows(stack, ours, rows, decode=tok.decode, mode=mode))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack", choices=sorted(STACKS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--json", type=Path, help="write the summary and every differing row here")
    parser.add_argument("--show", type=int, default=10, help="differing rows to print per mode")
    args = parser.parse_args()
    if not (args.out / (PREFIX + args.stack) / "export.json").is_file():
        print(f"{args.out} holds no {args.stack} export: run `ftdata export {args.out} --to {args.stack}`")
        raise SystemExit(2)
    results = agreements(args.stack, args.out)
    for result in results:
        s = result.summary()
        print(
            f"{s['stack']} ({s['mode']}): {s['rows']:,} rows; trained tokens ftdata {s['trained_tokens_ftdata']:,}, "
            f"{s['stack']} {s['trained_tokens_stack']:,}; {s['rows_differing']:,} rows differ ({s['ids_differ']:,} "
            f"in token ids, {s['trained_positions_differ']:,} in trained positions only; {s['refused']:,} refused "
            f"or failed; {s['split_records']:,} records the build splits)"
        )
        for row in result.differing[: args.show]:
            print(f"  row {row.row} {row.record or ''}: {row.detail}")
    if args.json:
        args.json.write_text(
            json.dumps([{**r.summary(), "differing": [d.to_dict() for d in r.differing]} for r in results], indent=1)
            + "\n",
            encoding="utf-8",
        )
    raise SystemExit(0 if all(not r.differing for r in results) else 1)


if __name__ == "__main__":
    main()
