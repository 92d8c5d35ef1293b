"""Issue 30, items 3-5 (detection): markers the template escapes, closes late, or writes as plain text.

- Tool-call arguments written through `tojson(ensure_ascii=True)` (Reka Edge): the sentinel ftdata
  puts into the arguments comes back as the six characters `\\ue000`; dict arguments train exactly
  as JSON-string ones.
- A template that closes an assistant turn only when another message follows (Apriel 1.6: `\\n<|end|>\\n`
  between turns, nothing after the last): that closer ends middle turns, EOS ends the last one.
- Markers that are plain text to the tokenizer (a ChatML template on a base model's tokenizer) with a
  template that ignores `add_generation_prompt` (transformers' own `{% generation %}` test template,
  tests/templates/peers/): the whole closer is trained, the header is prompt, and ftdata agrees with
  transformers' `return_assistant_tokens_mask` on every base tokenizer here (ported as literal cases).
"""

from __future__ import annotations

import json

import pytest
from support import ROOT, TOKENIZERS, matrix_module, tokenizer
from test_chat_masking import chat_template, one, trained_texts

from ftdata.chat.markers import detect_role_markers
from ftdata.chat.stops import added_ids, common_token_prefix, first_token, spelled_as_text, units
from ftdata.records.tools import escaped_forms, writes

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
MATRIX = matrix_module()
PEERS = ROOT / "tests" / "templates" / "peers"
# transformers' test template (tests/test_tokenization_common.py, test_chat_template_return_assistant_tokens_mask,
# huggingface/transformers at 060060143eabd3e53bebb9b268ce240a7c19ef29), byte for byte in tests/templates/peers/.
GENERATION_CHATML = (PEERS / "transformers-generation-chatml.jinja").read_text(encoding="utf-8")
BASE_TOKENIZERS = ("llama-3-8b-instruct", "llama-3.2-instruct", "gemma-3-it", "mistral-nemo-instruct-2407",
                   "phi-3-mini-4k-instruct", "deepseek-v3")  # fmt: skip


def served_trained(name: str, probe: str, kwargs: dict | None = None) -> list[str] | str:
    """The trained text of a served-corpus probe (one string per run of trained tokens), or ftdata's reason."""
    from ftdata.run.stage import Stage

    case = next(c for c in MATRIX.served_cases() if c.name == name)
    with MATRIX.served_on(case) as tok:
        stage = Stage(tok, MATRIX.build_options(kwargs or {}, case.stop_tokens))
        status, reason, result = MATRIX.ftdata_verdict(stage, probe, MATRIX.served_records(case)[probe])
        if result is None:
            return reason
        runs, run = [], []
        for token, label in zip(result.input_ids, result.labels):
            if label != -100:
                run.append(token)
            elif run:
                runs, run = [*runs, tok.decode(run)], []
        return runs + ([tok.decode(run)] if run else [])


# ---------------------------------------------------------------- 3. escaped tool-call arguments


def test_a_sentinel_is_found_in_every_form_a_template_escapes_it_to():
    assert escaped_forms("\ue000") == ("\ue000", "\\ue000", "\\uE000", "&#57344;", "&#xe000;", "&#xE000;")
    assert writes("\ue001", '{"argument": "\\ue001"}')
    assert writes("\ue001", "{'argument': '\\uE001'}")
    assert not writes("\ue001", '{"argument": "\\ue002"}')
    # The data itself may hold the six characters: only more of them than the render without the sentinel counts.
    assert not writes("\ue001", 'x "\\ue001"', original='x "\\ue001"')
    # Past the BMP (a long record's skeletons use the planes' private-use characters too): JSON writes a
    # surrogate pair, repr an eight-digit escape.
    mark = "\U000f0000"
    assert json.dumps({"a": mark}) == '{"a": "\\udb80\\udc00"}' and writes(mark, json.dumps({"a": mark}))
    assert writes(mark, repr({"a": mark})) and writes(mark, "&#983040;") and not writes(mark, json.dumps({"a": "\U000f0001"}))


def test_reka_edge_trains_dict_arguments_exactly_as_string_ones():
    """Reka Edge writes a dict of arguments with tojson(ensure_ascii=True); before, every dict call was
    rejected with "the chat template does not write its tool calls ('get_weather')"."""
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>\n\n<sep>'
    assert served_trained("reka-edge", "call-dict") == [f" {call}", " It is mild in Paris.\n\n<sep>"]
    assert served_trained("reka-edge", "call-str") == served_trained("reka-edge", "call-dict")
    parallel = served_trained("reka-edge", "parallel")
    assert parallel[0].count("<tool_call>") == 2 and '"city": "Oslo"' in parallel[0]


def test_a_template_that_really_drops_the_arguments_is_still_rejected(smol):
    drops = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}()</tool_call>{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    row = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call]}]}
    with chat_template(smol, drops):
        # The reason names what the renders show is missing: the arguments (the names are written).
        assert detect_role_markers(smol).writes_call_names
        assert one(smol, row).startswith("the chat template does not write the arguments of tool calls (only their names)")
    assert not detect_role_markers(tokenizer("llama-3-8b-instruct")).writes_call_names  # writes no calls at all


# ---------------------------------------------------------------- 4. a closer only before the next message


def test_apriel_closes_middle_turns_with_end_and_the_last_with_eos():
    case = next(c for c in MATRIX.served_cases() if c.name == "apriel-1.6")
    with MATRIX.served_on(case) as tok:
        m = detect_role_markers(tok, stop_tokens=case.stop_tokens)
    # Before: eot '', user_header '\n<|end|>\n<|begin_user|>\n', stops ('</s>',): every multi-turn record rejected.
    assert (m.eot, m.final_eot, m.user_header, m.stops, m.eos_appended) == (
        "<|end|>", "", "\n<|begin_user|>\n", ("<|end|>", "</s>"), "</s>")
    assert any("only when another message follows" in w for w in m.warnings)


@pytest.mark.parametrize(("probe", "expected"), [
    ("plain", ["Blue is one.\n<|end|>", "Green works too.</s>"]),
    ("call-dict", ['\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, '
                   '"id": "call0abcd"}]</tool_calls>\n<|end|>', "It is mild in Paris.</s>"]),
    ("reasoning", ["It is 5.\n<|end|>", "Four plus four makes eight.\n[BEGIN FINAL RESPONSE]\nIt is 8.</s>"]),
])  # fmt: skip
def test_apriel_multi_turn_and_tool_records_train(probe, expected):
    """Before: rejected, "it does not end with a token that stops generation (stop tokens: '</s>')"."""
    assert served_trained("apriel-1.6", probe) == expected


def test_apriel_training_form_closes_the_last_turn_with_its_own_closer():
    """`training_prompt=True` makes the template write `\\n<|end|>\\n` after the last turn too: no EOS then."""
    assert served_trained("apriel-1.6", "plain", {"training_prompt": True}) == [
        "Blue is one.\n<|end|>", "Green works too.\n<|end|>"]


# ---------------------------------------------------------------- 5. markers that are plain text


def test_units_keep_a_plain_text_marker_whole():
    llama = tokenizer("llama-3-8b-instruct")  # <|im_end|> is no token of Llama 3
    text = "<|im_end|>\n<|im_start|>user\n"
    assert [text[a:b] for a, b in units(text, llama)] == ["<|im_end|>", "\n", "<|im_start|>", "user", "\n"]
    assert first_token("<|im_end|>\n", llama) == "<|im_end|>"
    assert common_token_prefix(text, "<|im_end|>\n", llama) == len("<|im_end|>\n")
    qwen = tokenizer("qwen2.5-instruct")  # the same text where the markers are tokens: the tokens
    assert [text[a:b] for a, b in units(text, qwen)] == ["<|im_end|>", "\n", "<|im_start|>", "user", "\n"]


@pytest.mark.parametrize("name", BASE_TOKENIZERS)
def test_text_markers_are_detected_whole(name):
    """Before: eot '<', stops ('<',), assistant_header '|im_end|>\\n' taken as a prompt written after every turn."""
    with chat_template(tokenizer(name), GENERATION_CHATML) as tok:
        m = detect_role_markers(tok)
    assert (m.eot, m.final_eot, m.stops, m.assistant_header, m.user_header) == (
        "<|im_end|>", "<|im_end|>", ("<|im_end|>",), "<|im_start|>assistant\n", "<|im_start|>user\n")
    assert m.ignores_generation_prompt and m.text_stops == ("<|im_end|>",)
    assert any("not tokens of this tokenizer" in w and "stop string" in w for w in m.warnings)


@pytest.mark.parametrize(("template", "name", "eot", "expected"), [
    ("gemma-3-it", "llama-3-8b-instruct", "<end_of_turn>", ["yo<end_of_turn>\n", "4<end_of_turn>\n"]),
    # Markers glued together as text (`<|eot_id|><|start_header_id|>user`): each tag is a unit of its own.
    ("llama-3-8b-instruct", "gemma-3-it", "<|eot_id|>", ["yo<|eot_id|>", "4<|eot_id|>"]),
    ("deepseek-v3", "llama-3.2-instruct", "<｜end▁of▁sentence｜>", ["yo<｜end▁of▁sentence｜>", "4<｜end▁of▁sentence｜>"]),
    ("qwen2.5-instruct", "phi-3-mini-4k-instruct", "<|im_end|>", ["yo<|im_end|>", "4<|im_end|>"]),
])  # fmt: skip
def test_a_template_on_a_tokenizer_without_its_markers_trains_the_whole_closer(template, name, eot, expected):
    tok = tokenizer(name)
    with chat_template(tok, tokenizer(template).chat_template):
        m = detect_role_markers(tok)
        rendered, result = one(tok, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                                  {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})  # fmt: skip
    assert (m.eot, m.stops, m.text_stops) == (eot, (eot,), (eot,))
    assert trained_texts(tok, rendered, result) == expected


# transformers' test_chat_template_return_assistant_tokens_mask, ported: its two conversations, and what
# `return_assistant_tokens_mask=True` marks on each tokenizer (decoded; measured with transformers 5.23).
PEER_CONVERSATIONS = [
    [{"role": "system", "content": "system message"}, {"role": "user", "content": "user message"},
     {"role": "assistant", "content": "start turn 1 assistant message. end turn 1"},
     {"role": "user", "content": "user message 2"}, {"role": "assistant", "content": "start turn 2 assistant message. end turn 2"}],
    [{"role": "system", "content": "system message 3"}, {"role": "user", "content": "user message 3"},
     {"role": "assistant", "content": "start turn 3 assistant message. end turn 3"},
     {"role": "user", "content": "user message 4"}, {"role": "assistant", "content": "start turn 4 assistant message. end turn 4"}],
]  # fmt: skip
# Byte-level BPE tokenizers merge `>` and the newline after it into one token (`|>\n`): transformers marks the
# token that holds the generation block's last character, ftdata keeps a token that crosses a span's end by
# whitespace only whole (docs/masking.md, section 2): both train the newline there. Gemma and Phi-3 split it.
NEWLINE_GLUED = {"llama-3-8b-instruct", "llama-3.2-instruct", "mistral-nemo-instruct-2407", "deepseek-v3"}


@pytest.mark.parametrize("name", BASE_TOKENIZERS)
@pytest.mark.parametrize("k", [0, 1])
def test_text_markers_train_as_transformers_assistant_mask_does(name, k):
    tok = tokenizer(name)
    nl = "\n" if name in NEWLINE_GLUED else ""
    first, second = (1, 2) if k == 0 else (3, 4)
    expected = [f"start turn {first} assistant message. end turn {first}<|im_end|>{nl}",
                f"start turn {second} assistant message. end turn {second}<|im_end|>{nl}"]  # fmt: skip
    with chat_template(tok, GENERATION_CHATML):
        rendered, result = one(tok, {"messages": PEER_CONVERSATIONS[k]})
        assert rendered.method == "prefix"
        assert trained_texts(tok, rendered, result) == expected
        peer = tok.apply_chat_template(PEER_CONVERSATIONS[k], tokenize=True, return_assistant_tokens_mask=True, return_dict=True)
    runs, run = [], []
    for token, on in zip(peer["input_ids"], peer["assistant_masks"]):
        if on:
            run.append(token)
        elif run:
            runs, run = [*runs, tok.decode(run)], []
    assert runs + ([tok.decode(run)] if run else []) == expected


def test_text_markers_with_a_generation_prompt_train_the_closer_not_the_header():
    """The same markers on a template that honours add_generation_prompt (prefix path, no ignored prompt)."""
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = tokenizer("llama-3-8b-instruct")
    with chat_template(tok, chatml):
        m = detect_role_markers(tok)
        rendered, result = one(tok, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                                  {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})  # fmt: skip
    assert (m.eot, m.stops, m.ignores_generation_prompt) == ("<|im_end|>", ("<|im_end|>",), False)
    assert trained_texts(tok, rendered, result) == ["yo<|im_end|>\n", "4<|im_end|>\n"]


def test_markers_and_preview_say_the_markers_need_a_stop_string(tmp_path):
    """`ftdata markers` and `ftdata preview` on a base tokenizer folder whose chat template is ChatML."""
    import json
    import shutil

    from typer.testing import CliRunner

    from ftdata.cli.app import app

    folder = tmp_path / "llama-chatml"
    folder.mkdir()
    shutil.copy(TOKENIZERS / "llama-3-8b-instruct" / "tokenizer.json", folder)
    config = json.loads((TOKENIZERS / "llama-3-8b-instruct" / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": GENERATION_CHATML}), encoding="utf-8")
    warning = ("template writes markers that are not tokens of this tokenizer: '<|im_end|>' is plain text, trained as the "
               "text it is; inference needs it as a stop string (e.g. stop=['<|im_end|>'])")  # fmt: skip
    shown = CliRunner().invoke(app, ["markers", "-t", str(folder), "--no-color"])
    assert shown.exit_code == 0 and warning in " ".join(shown.stdout.split())
    assert "│ text_stops                │ ('<|im_end|>',)" in shown.stdout
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n")
    shown = CliRunner().invoke(app, ["preview", str(data), "-t", str(folder), "--no-color"])
    assert shown.exit_code == 0 and warning in " ".join(shown.stdout.split())
    assert "⟦yo<|im_end|>\n⟧" in shown.stdout  # the whole closer (and the newline glued to it) trained, not the header


PIECES = ["<|im_end|>", "<|im_start|>", "user", "assistant", "\n", "\n\n", " ", "<|end|>", "</s>", "[INST]", "hi", "Ответ", "😀"]


@pytest.mark.parametrize("name", ["llama-3-8b-instruct", "qwen2.5-instruct", "gemma-3-it"])
def test_units_tile_the_text_and_common_prefixes_end_on_both_units(name):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tok = tokenizer(name)
    added = {a.content for a in tok.backend_tokenizer.get_added_tokens_decoder().values()}
    text = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)

    @settings(max_examples=60, deadline=None)
    @given(text, text, text)
    def check(head, a, b):
        for t in (head + a, head + b):
            spans = units(t, tok)
            assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:]))  # sorted, disjoint
            covered = {i for s, e in spans for i in range(s, e)}
            assert all(i in covered for i, c in enumerate(t) if not c.isspace())
            # A unit is an added token, or plain text all whitespace or without any.
            assert all(t[s:e] in added or t[s:e].isspace() or not any(c.isspace() for c in t[s:e]) for s, e in spans)
        n = common_token_prefix(head + a, head + b, tok)
        assert (head + a)[:n] == (head + b)[:n]
        for t in (head + a, head + b):
            assert n == 0 or n in {e for _, e in units(t, tok)}

    check()


def test_the_trains_line_says_the_last_turn_gets_eos_where_the_closer_comes_only_before_the_next_message():
    from ftdata.cli.preview import describe_training

    case = next(c for c in MATRIX.served_cases() if c.name == "apriel-1.6")
    with MATRIX.served_on(case) as tok:
        m = detect_role_markers(tok, stop_tokens=case.stop_tokens)
    assert describe_training(m).startswith(
        "content + '<|end|>' or '</s>' (middle turns) / appended EOS '</s>' (last turn); tools: schemas, calls with dict arguments")


@pytest.mark.parametrize("name", ["llama-3-8b-instruct", "gemma-3-it"])
def test_a_truncated_assistant_turn_trains_up_to_the_cut_as_transformers_does(name):
    """transformers' test_chat_template_return_assistant_tokens_mask_truncated, ported: cut inside the
    assistant turn, everything from its start to the cut is trained. Convention difference: ftdata adds the
    tokenizer's BOS (what `tokenizer(text)` adds; these tokenizers have one) and counts it in max_length,
    transformers' `apply_chat_template(tokenize=True)` adds none, so the same max_length keeps one response
    token fewer here (`truncated`)."""
    from ftdata import prepare

    long = ("start turn assistant. long string to be truncated, long string to be truncated, "
            "long string to be truncated, long string to be truncated, long string to be truncated")  # fmt: skip
    conv = [{"role": "system", "content": "system message"}, {"role": "user", "content": "user message"},
            {"role": "assistant", "content": long}, {"role": "user", "content": "another user message"}]  # fmt: skip
    tok = tokenizer(name)
    with chat_template(tok, GENERATION_CHATML):
        text = tok.apply_chat_template(conv, tokenize=False)
        cut = tok.apply_chat_template(conv, tokenize=True, return_dict=True).char_to_token(text.index(", long string to be truncated,"))
        peer = tok.apply_chat_template(conv, tokenize=True, return_assistant_tokens_mask=True, return_dict=True,
                                       max_length=cut, truncation=True)  # fmt: skip
        row = prepare([{"messages": conv}], tokenizer=tok, max_length=cut, truncation="keep_start").dataset[0]
    assert tok.decode([t for t, on in zip(peer["input_ids"], peer["assistant_masks"]) if on]) == (
        "start turn assistant. long string to be truncated")
    assert tok.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]) == (
        "start turn assistant. long string to be")
    assert len(row["input_ids"]) == len(peer["input_ids"]) == cut and row["input_ids"][0] == tok.bos_token_id


def test_added_ids_are_read_again_once_a_token_is_added():
    """`units` caches a tokenizer's added ids (thousands on Gemma 3); a token added later must count."""
    from ftdata.io.resources import load_tokenizer

    tok = load_tokenizer(TOKENIZERS / "qwen2.5-instruct")  # a private copy: the shared one stays untouched
    assert [("<|turn|>hi")[a:b] for a, b in units("<|turn|>hi", tok)] == ["<|turn|>", "hi"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in added_ids(tok)
    tok.add_tokens(["<|turn|>"], special_tokens=True)
    assert tok.convert_tokens_to_ids("<|turn|>") in added_ids(tok)
    assert not spelled_as_text("<|turn|>", tok) and spelled_as_text("<|turn2|>", tok)
