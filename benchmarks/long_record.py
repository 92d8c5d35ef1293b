"""Work per record: one conversation of N messages (user / assistant alternating), rendered and masked.

Every assistant turn's inference prompt P_i is one render of the conversation up to it, so
rendering each is quadratic in the record's length. Where the template is prefix-stable,
`ftdata.chat.turns` locates them from structure in a bounded number of renders instead
(docs/masking.md, section 1). This prints the seconds one record takes at each size.

    python benchmarks/long_record.py [--tokenizer NAME] [1000 2000 4000]

NAME is a folder under ../shared/tokenizers (default: the bundled SmolLM2, ChatML).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(os.environ.get("FTDATA_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=None, help="folder under ../shared/tokenizers (default: bundled SmolLM2)")
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 2000, 4000])
    args = parser.parse_args()
    from ftdata.errors import Location
    from ftdata.io.resources import load_tokenizer
    from ftdata.options import DataOptions
    from ftdata.run.engine import Stage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = load_tokenizer(SHARED / "tokenizers" / args.tokenizer if args.tokenizer else None)
    stage = Stage(tok, DataOptions(max_length=10**8))
    for n in args.sizes:
        messages = [{"role": "user" if k % 2 == 0 else "assistant", "content": f"message number {k}"} for k in range(n)]
        (example,) = stage.examples(Location("long"), {"messages": messages})
        start = time.perf_counter()
        rendered = stage.renderer(example)
        row = stage.masker([rendered])[0]
        seconds = time.perf_counter() - start
        print(f"{n} messages: {seconds:.2f} s ({len(rendered.spans)} trained turns, {len(row.input_ids)} tokens, {rendered.method})")


if __name__ == "__main__":
    main()
