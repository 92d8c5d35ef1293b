"""ftdata: supervised fine-tuning data for LLMs, masked exactly, packed tightly, checked before training.

>>> from ftdata import build, build_sft_dataset
>>> ds = build_sft_dataset("data.json", template="alpaca", max_length=1024)  # doctest: +SKIP
>>> result = build("data.json", "out", template="alpaca", packing=True)  # doctest: +SKIP
"""

from ftdata.build.load import load
from ftdata.errors import ConfigError, FtdataError, ReaderError, RecordError, TemplateError, UnusableRecord
from ftdata.chat.markers import RoleMarkers, detect_role_markers
from ftdata.build.api import BuildResult, build, build_sft_dataset, prepare
from ftdata.mix.recipe import Recipe, load_recipe
from ftdata.options import BuildOptions, DataOptions, OutputOptions, RunOptions
from ftdata.run.report import BuildReport
from ftdata.io.resources import load_tokenizer
from ftdata.types import IGNORE_INDEX, Example, MaskPolicy, Message, Rendered, TruncationPolicy

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "BuildOptions",
    "BuildReport",
    "BuildResult",
    "DataOptions",
    "OutputOptions",
    "Recipe",
    "RunOptions",
    "ConfigError",
    "Example",
    "FtdataError",
    "MaskPolicy",
    "Message",
    "ReaderError",
    "RecordError",
    "Rendered",
    "RoleMarkers",
    "TemplateError",
    "TruncationPolicy",
    "UnusableRecord",
    "build",
    "build_sft_dataset",
    "detect_role_markers",
    "load",
    "load_recipe",
    "load_tokenizer",
    "prepare",
]
