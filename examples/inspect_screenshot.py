"""Regenerate docs/inspect.png, the README's picture of the inspection page, from the examples' data.

    python examples/inspect_screenshot.py     # needs Debian's chromium (make test installs it)

Builds the bundled Alpaca demo with a short max_length (so the page has cut and rejected records to
show), writes the page with `ftdata inspect`, and takes a headless screenshot of it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOT = ROOT / "docs" / "inspect.png"


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install chromium (or run make test, which installs it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path("alpaca-demo")  # in `tmp`: the page's title is the folder as given
        ftdata = [sys.executable, "-m", "ftdata"]
        data = ROOT / "examples" / "data" / "alpaca_en_demo_20.json"
        subprocess.run([*ftdata, "build", str(data), "-o", str(out), "--max-length", "160", "--truncation", "drop",
                        "--test-size", "0.2", "--inspect"], check=True, capture_output=True, cwd=tmp)  # fmt: skip
        page = Path(tmp) / out / "inspect.html"
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1500",
                        f"--screenshot={SHOT}", page.as_uri()], check=True, capture_output=True)  # fmt: skip
    print(f"wrote {SHOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
