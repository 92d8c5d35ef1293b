"""The one text normalisation that dedup and decontamination compare records by."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Unicode NFKC, casefolded, every whitespace run collapsed to one space, ends stripped.

    Two texts that differ only in width forms, case or spacing normalise to the same string:

        >>> normalise("  Ｈello\\n\\tWORLD ")
        'hello world'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(text: str) -> list[str]:
    """The words of the normalised text (runs of letters, digits and `_`; punctuation dropped).

    >>> words("Paris, France.")
    ['paris', 'france']
    """
    return _WORD.findall(normalise(text))
