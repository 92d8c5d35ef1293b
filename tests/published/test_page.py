"""docs/bring-your-data.md shows real output: the examples of its ecosystem, published-SFT and R1 sections are run and compared
with the page (the other sections' examples are checked by their own tests)."""

from __future__ import annotations

import re

import pytest
from support import ROOT, TOKENIZERS
from test_docs import EXAMPLE, _run

PAGE = ROOT / "docs" / "bring-your-data.md"
SECTIONS = ("## Published SFT sets", "## Reasoning in the content", "## Coming from ms-swift")

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")


def examples() -> list[tuple[str, str]]:
    text = PAGE.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^(?=## )", text)
    found = [(m.group(2), m.group(3)) for part in parts if part.startswith(SECTIONS) for m in EXAMPLE.finditer(part)]
    assert len(found) >= 12  # four published sets, three R1 templates, five ecosystem shapes
    return found


@pytest.mark.parametrize(("command", "shown"), examples())
def test_the_pages_examples_are_real_output(command: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert _run(command) == shown


def test_the_page_is_linked_from_the_readme_and_the_formats_page() -> None:
    assert "(docs/bring-your-data.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(bring-your-data.md" in (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
