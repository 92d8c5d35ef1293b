"""What TRL 1.16 and Axolotl train as a DPO completion, against the inference-consistency rule, pair by pair.

Data: LLaMA-Factory's DPO demo (../shared/datasets/preference/llamafactory_dpo_en_demo.json, 300
ShareGPT pairs), read with `ftdata.records.preference.to_pairs` and written as TRL's conversational
`prompt`/`chosen`/`rejected`. Per tokenizer (the bundled SmolLM2 and every folder of
../shared/tokenizers, or --tokenizers), each pair is prepared four ways:

  exact    the rule (docs/design.md, "Preference data"): prompt_ids = the inference prompt
           `render(prompt, add_generation_prompt=True)` tokenized alone; completion = the text the
           full render holds after it, up to and including the final turn's end-of-turn token
           (the first special token of what the template writes after the reply), tokenized after
           that prompt. Cross-checked against ftdata's SFT build of the chosen conversation with
           mask=last_assistant (its trained tokens and the tokens before them).
  trl      TRL 1.16's own `DPOTrainer._prepare_dataset` on the conversational rows (dpo_trainer.py
           1036-1142): prompt and prompt+completion rendered and tokenized apart, the completion
           everything after their shortest common token prefix.
  axolotl  Axolotl's `dpo.chat_template.default` strategy re-implemented from its source
           (axolotl-ai-cloud/axolotl @ a563815f, src/axolotl/prompt_strategies/dpo/chat_template.py):
           the prompt rendered with the generation prompt; each answer rendered after a dummy user
           turn, cut at `str.find(answer)` and `rstrip()`ed; the strings then prepared by TRL 1.16's
           text path (EOS appended when missing, `tokenizer(text)`), as Axolotl's DPO trainer
           hands them to TRL.

  ftdata pairs
           ftdata's preference rows (`ftdata.build` of the demo file: docs/preference.md).

A pair counts once per column when either side shows it: `prompt differs` (the prompt tokens are
not the inference prompt's: TRL cut its end where prompt and prompt+completion tokenize apart, or a
second BOS), `trailing` (the completion is the exact one plus template text after the end-of-turn
token, shown), `lost` (exact completion tokens missing or changed), `exact` (prompt and both
completions equal the rule's).

    python benchmarks/preference_compare.py [--tokenizers smollm2,qwen2.5-instruct]
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
DEMO = SHARED / "datasets/preference/llamafactory_dpo_en_demo.json"
SENTINEL = "\ue000"  # a private-use character no template or reply writes


def load_pairs() -> list[dict]:
    """The demo as TRL conversational rows: prompt messages, one assistant message a side."""
    from ftdata.io.readers import read_records
    from ftdata.records.preference import to_pairs

    rows = []
    for location, row in read_records(DEMO):
        (pair,) = to_pairs(row, location)
        rows.append({
            "prompt": pair.prompt.chat_messages(),
            "chosen": [{"role": "assistant", "content": pair.chosen.content}],
            "rejected": [{"role": "assistant", "content": pair.rejected.content}],
        })  # fmt: skip
    return rows


def render(tok, messages, **kw) -> str:
    return tok.apply_chat_template(messages, tokenize=False, **kw)


def exact(tok, prompt: list[dict], reply: dict) -> tuple[list[int], list[int]]:
    """The rule's (prompt_ids, completion_ids) for one side.

    The reply's turn is located by structure: a render with a sentinel reply gives the text the
    template writes before the reply (`head`) and after it (`after`); the completion is the reply as
    the full render writes it plus the end-of-turn token (the first token of `after` when it is a
    control token: `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|end|>`, `</s>`), tokenized after
    the inference prompt. Raises ValueError where the full render is not head + reply + after.
    """
    inference = render(tok, prompt, add_generation_prompt=True)
    full = render(tok, [*prompt, reply])
    head, after = render(tok, [*prompt, {"role": "assistant", "content": SENTINEL}]).split(SENTINEL)
    if not (full.startswith(head) and full.endswith(after)):
        raise ValueError("the render around the reply depends on the reply")
    pieces = tok(after, add_special_tokens=False, return_offsets_mapping=True)
    control = bool(pieces["input_ids"]) and pieces["input_ids"][0] in tok.added_tokens_decoder
    stop = after[: pieces["offset_mapping"][0][1]] if control else ""
    completion = full[len(head) : len(full) - len(after) + len(stop)]
    encoded = tok(inference + completion, add_special_tokens=False, return_offsets_mapping=True)
    cut = next(i for i, (start, _) in enumerate(encoded["offset_mapping"]) if start >= len(inference))
    if encoded["offset_mapping"][cut - 1][1] > len(inference):
        raise ValueError("a token crosses the prompt's end")
    return tok(inference, add_special_tokens=False)["input_ids"], encoded["input_ids"][cut:]


def trl_prepare(tok, rows: list[dict]) -> list[dict]:
    """TRL 1.16's own DPO preparation (DPOTrainer._prepare_dataset), without building a trainer."""
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, max_length=None, report_to=[], use_cpu=True, bf16=False)
    trainer = types.SimpleNamespace(_tokenizer=tok)  # the one attribute _prepare_dataset reads
    prepared = DPOTrainer._prepare_dataset(trainer, datasets.Dataset.from_list(rows), tok, args, "train")
    return prepared.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_list()


def axolotl_strings(tok, row: dict) -> dict:
    """Axolotl's dpo chat_template strategy: prompt, chosen and rejected as strings."""
    dummy = {"role": "user", "content": "[[dummy_message]]"}
    out = {"prompt": render(tok, row["prompt"], add_generation_prompt=True)}
    for side in ("chosen", "rejected"):
        answer = row[side][0]
        text = render(tok, [dummy, answer], add_generation_prompt=False)
        out[side] = text[text.find(answer["content"]) :].rstrip()
    return out


def ftdata_last_turn(tok, rows: list[dict]) -> list[list[int]]:
    """ftdata's SFT build of each chosen conversation with the last assistant turn trained: its trained tokens."""
    from ftdata import prepare

    records = [{"messages": [*row["prompt"], *row["chosen"]]} for row in rows]
    result = prepare(records, tokenizer=tok, mask="last_assistant", max_length=32768, packing=False)
    assert len(result.dataset) == len(rows), "ftdata rejected a record"
    return [[i for i, label in zip(ids, labels) if label != -100] for ids, labels in zip(result.dataset["input_ids"], result.dataset["labels"])]


def ftdata_pairs(tok) -> list[dict]:
    """ftdata's own preference rows of the demo file (`ftdata.build`, the pairs detected, nothing cut)."""
    from ftdata import prepare

    result = prepare(DEMO, tokenizer=tok, max_length=1 << 20)
    assert result.report.task == "preference" and len(result.dataset) == 300, result.report.summary()
    return result.dataset.to_list()


def classify(tok, want: tuple[list[int], list[int], list[int]], got: dict) -> set[str]:
    """What one prepared pair does against the rule, as `kind:detail` strings."""
    prompt, chosen, rejected = want
    found = set()
    if got["prompt_ids"] != prompt:
        if prompt[: len(got["prompt_ids"])] == got["prompt_ids"]:
            found.add("prompt:cut its end")
        elif got["prompt_ids"] == [tok.bos_token_id, *prompt]:
            found.add("prompt:second BOS")
        else:
            found.add("prompt:other")
    for expected, ids in ((chosen, got["chosen_ids"]), (rejected, got["rejected_ids"])):
        found |= completion_kind(tok, expected, ids)
    return found


def completion_kind(tok, expected: list[int], ids: list[int]) -> set[str]:
    """How trained completion `ids` differ from the rule's `expected` ones: nothing, trailing, leading or lost."""
    if ids == expected:
        return set()
    if ids[: len(expected)] == expected:
        return {"trailing:" + repr(tok.decode(ids[len(expected) :]))}
    if ids[-len(expected) :] == expected:
        return {"leading:prompt text trained"}
    return {"lost:"}


def compare(name: str, tok, rows: list[dict]) -> list[tuple[str, str, collections.Counter]]:
    wants = []
    for row in rows:
        try:
            (p, c), (_, r) = exact(tok, row["prompt"], row["chosen"][0]), exact(tok, row["prompt"], row["rejected"][0])
            wants.append((p, c, r))
        except ValueError:
            wants.append(None)
    check = collections.Counter()
    for want, trained in zip(wants, ftdata_last_turn(tok, rows)):
        check.update({"no rule"} if want is None else completion_kind(tok, want[1], trained) or {"exact"})
    tallies = [(name, "ftdata SFT, last turn (check of exact)", check)]
    axolotl = [axolotl_strings(tok, row) for row in rows]
    methods = (("ftdata pairs", ftdata_pairs(tok)), ("trl", trl_prepare(tok, rows)), ("axolotl", trl_prepare(tok, axolotl)))
    for method, prepared in methods:
        counts = collections.Counter()
        for want, got in zip(wants, prepared):
            counts.update({"no rule"} if want is None else classify(tok, want, got) or {"exact"})
            if want is not None and len(got["prompt_ids"]) < len(want[0]):
                counts["cut tokens"] += len(want[0]) - len(got["prompt_ids"])
        tallies.append((name, method, counts))
    return tallies


def table(tallies: list[tuple[str, str, collections.Counter]], pairs: int) -> str:
    """The counts as a Markdown table; a detailed column lists each kind with its detail."""
    lines = [
        "| tokenizer | method | pairs | exact | prompt differs | completion + trailing | prompt text in completion | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, method, counts in tallies:
        cells = [str(counts["exact"]), *(_kinds(counts, kind) for kind in ("prompt", "trailing", "leading", "lost"))]
        if counts["cut tokens"]:
            cells[1] += f" ({counts['cut tokens']} prompt tokens in all)"
        if counts["no rule"]:
            cells[0] += f" ({counts['no rule']} without a reference)"
        lines.append(f"| {name} | {method} | {pairs} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _kinds(counts: collections.Counter, kind: str) -> str:
    """The pairs of one kind, by detail: "300 '\\n'"."""
    found = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith(kind + ":")}
    shown = ", ".join(f"{v} {k}".strip() for k, v in sorted(found.items(), key=lambda kv: -kv[1])) or "0"
    return shown.replace("|", "\\|")  # a Markdown cell: '<|endoftext|>' keeps its bars


def main() -> None:
    from ftdata import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ["smollm2", *sorted(p.name for p in (SHARED / "tokenizers").iterdir() if (p / "tokenizer.json").is_file())]
    parser.add_argument("--tokenizers", default=",".join(names), help="comma-separated: smollm2 and folders of ../shared/tokenizers")
    opts = parser.parse_args()
    datasets.disable_caching()
    datasets.disable_progress_bars()
    rows = load_pairs()
    tallies = []
    for name in opts.tokenizers.split(","):
        tok = load_tokenizer(None if name == "smollm2" else SHARED / "tokenizers" / name)
        tallies += compare(name, tok, rows)
    print(table(tallies, len(rows)))


if __name__ == "__main__":
    main()
