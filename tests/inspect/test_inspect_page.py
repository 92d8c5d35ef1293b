"""The inspection page (`ftdata inspect`, `ftdata build --inspect`): what it holds, read from the HTML, and how it
behaves, read in a real browser (Debian's chromium through its chromedriver, driven by Selenium).

The browser tests are skipped, saying why, where chromium, chromedriver or selenium is missing; `make test`
installs the browser where it can (Debian's packages, as root).
"""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.inspect import PAGE, Sample, collect, inspect

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "</script><img src=x onerror=alert(1)> {{ 7*7 }} \u202eevil\u202c"
RECORDS = [
    *json.loads((ROOT / "examples/data/alpaca_en_demo_20.json").read_text(encoding="utf-8")),
    {"messages": [{"role": "user", "content": HOSTILE}, {"role": "assistant", "content": "<script>alert(2)</script><svg onload=\"window.__ftdataPwned=1\">ok"}]},
    {"instruction": "Say nothing.", "output": ""},  # rejected: empty_response
    {"instruction": "Say nothing again.", "output": "   "},  # rejected: empty_response
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a lone \udc80 surrogate"}]},  # unreadable
]


def _write(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for record in RECORDS:
            fh.write(json.dumps(record, ensure_ascii=True) + "\n")  # the lone surrogate as its JSON escape
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inspect")
    out = folder / "out"
    ftdata.build(str(_write(folder / "data.jsonl")), out, max_length=512, on_error="skip", test_size=4, seed=1)
    inspect(out, sample=Sample(first=40))  # every row on the page, the hostile record's too
    return out


class _Text(HTMLParser):
    """The page's visible text and every URL an element would load."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.urls: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action", "poster", "data")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(path: Path) -> _Text:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_the_page_counts_what_build_json_counts_and_shows_the_sample(built: Path) -> None:
    manifest = json.loads((built / "build.json").read_text(encoding="utf-8"))
    page = collect(built)
    counts = manifest["counts"]
    assert sum(page.split_rows.values()) == counts["rows"]
    assert sum(page.reject_counts.values()) == sum(counts["rejected"].values()) + sum(counts["cut"].values())
    assert page.reject_counts["empty_response"] == counts["rejected"]["empty_response"] == 2
    # every row counted in the distributions, the sample: first 10, 10 drawn, 5 longest (some overlap)
    assert sum(n for *_, n in page.histograms[0].bins) == page.split_rows["train"] + page.split_rows["test"]
    train = page.split_rows["train"]
    assert [r.index for r in page.rows if r.chosen_as == "first" and r.split == "train"] == list(range(10))
    assert [r.index for r in page.rows if r.split == "test"] == [0, 1, 2, 3]  # each split sampled
    shown = [(r.split, r.index) for r in page.rows]
    assert len(shown) == len(set(shown)) and sum(r.split == "train" for r in page.rows) <= 25
    text = "".join(_parsed(built / PAGE).text)
    assert f"{counts['records']:,} records -> {train + page.split_rows['test']:,} rows, 3 rejected" in text
    assert page.reject_counts["unreadable"] == 1  # the lone surrogate: rejected at reading, shown with its reason
    # a row's trained tokens are exactly its labels' tokens
    row = next(r for r in page.rows if r.index == 0)
    (section,) = row.sections
    assert sum(t.label != -100 for t in section.tokens) == row.trained > 0
    assert all(t.label in (-100, t.id) for t in section.tokens)


def test_the_sample_is_reproducible_and_the_seed_moves_the_draw(built: Path) -> None:
    def rows(**sample: int) -> list:
        return [r for r in collect(built, sample=Sample(**{"first": 0, "random": 0, "longest": 0, **sample})).rows if r.split == "train"]

    drawn = lambda seed: [r.index for r in rows(random=5, seed=seed)]  # noqa: E731
    assert drawn(3) == drawn(3) and len(drawn(3)) == 5
    assert drawn(3) != drawn(4)
    (longest,) = rows(longest=1)
    assert longest.chosen_as == "longest" and longest.total == max(r.total for r in rows(first=40))
    with pytest.raises(ConfigError, match="first must be >= 0"):
        Sample(first=-1)


def test_hostile_text_is_text_and_the_page_loads_nothing(built: Path) -> None:
    html = (built / PAGE).read_text(encoding="utf-8")
    parsed = _parsed(built / PAGE)
    assert parsed.scripts == 1  # the page's own
    text = "".join(parsed.text)  # the page as a reader sees it: the record's markup is there, as text
    assert "<img src=x" not in html and "</script><img src=x onerror=alert(1)>" in text
    assert "<script>alert(2)" not in html and "<script>alert(2)</script><svg onload=" in text
    assert "{{ 7*7 }} ⟨U+202E⟩evil" in text  # Jinja in data is not rendered; a bidi override shown as its code point
    assert "\u202e" not in html and "\u202c" not in html
    assert all(url.startswith("data:") or url.startswith("#") for url in parsed.urls), parsed.urls
    assert "default-src 'none'" in html


def test_build_inspect_writes_the_page_into_out_and_a_rebuild_owns_it(tmp_path: Path) -> None:
    data = _write(tmp_path / "data.jsonl")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["build", str(data), "-o", str(out), "--max-length", "512", "--on-error", "skip", "--inspect"])
    assert result.exit_code == 0, result.output
    assert f"{out}/{PAGE}" in result.output and (out / PAGE).is_file()
    assert PAGE in json.loads((out / ".ftdata-output.json").read_text(encoding="utf-8"))["files"]
    assert ftdata.load(out).report.records == len(RECORDS)  # the page does not disturb the build's own files
    again = runner.invoke(app, ["build", str(data), "-o", str(out), "--max-length", "512", "--on-error", "skip", "--no-cache"])
    assert again.exit_code == 0, again.output
    assert not (out / PAGE).exists()  # a stale page is removed with the build it described


def test_inspect_replaces_only_a_page_it_wrote(built: Path, tmp_path: Path) -> None:
    mine = tmp_path / "page.html"
    runner = CliRunner()
    assert runner.invoke(app, ["inspect", str(built), "-o", str(mine)]).exit_code == 0
    assert runner.invoke(app, ["inspect", str(built), "-o", str(mine), "--first", "1"]).exit_code == 0
    theirs = tmp_path / "notes.html"
    theirs.write_text("<p>my notes</p>", encoding="utf-8")
    result = runner.invoke(app, ["inspect", str(built), "-o", str(theirs)])
    assert result.exit_code == 2
    assert "is not a page ftdata wrote; ftdata never replaces it" in result.output
    assert theirs.read_text(encoding="utf-8") == "<p>my notes</p>"


def test_inspect_on_data_builds_a_sample_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = _write(tmp_path / "data.jsonl")
    result = CliRunner().invoke(app, ["inspect", str(data), "--limit", "5", "--max-length", "256"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "inspect.html").is_file()
    html = (tmp_path / "inspect.html").read_text(encoding="utf-8")
    assert "5 records -&gt; 3 rows, 2 rejected" in html and "(its first 5 records, built for this page)" in html
    assert not (tmp_path / "out").exists()


def test_a_build_folder_takes_no_build_options_and_bad_input_is_one_line(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(built), "--max-length", "10"])
    assert result.exit_code == 2 and "build options (max_length) apply to DATA only" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{not json\n', encoding="utf-8")
    result = runner.invoke(app, ["inspect", str(bad), "-o", str(tmp_path / "p.html")])
    assert result.exit_code == 3 and "bad.jsonl:2" in result.output and "Traceback" not in result.output
    # a record that does not build is on the page as a reject (on_error skip for DATA), not an error
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"instruction": "a"}\n{"instruction": "b", "output": "c"}\n', encoding="utf-8")
    page = tmp_path / "m.html"
    assert runner.invoke(app, ["inspect", str(missing), "-o", str(page)]).exit_code == 0
    assert "field &#39;output&#39;: no response field" in page.read_text(encoding="utf-8")
    # every record rejected: one line naming the first, and no path into the page's scratch, which is gone
    missing.write_text('{"instruction": "a"}\n', encoding="utf-8")
    result = runner.invoke(app, ["inspect", str(missing), "-o", str(page)])
    assert result.exit_code == 1 and "every record was rejected (1 of 1); first: " in result.output
    assert "ftdata-" not in result.output and "failed-rejects" not in result.output


def test_a_reject_shows_the_start_of_its_line_and_a_weighted_token_its_weight(built: Path, tmp_path: Path) -> None:
    page = collect(built)
    (first, second) = [r for r in page.rejects if r.code == "empty_response"]
    assert first.excerpt == json.dumps(RECORDS[21]) and second.excerpt == json.dumps(RECORDS[22])
    data = tmp_path / "weighted.jsonl"
    data.write_text(json.dumps({"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello.", "loss_weight": 0.5},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}) + "\n", encoding="utf-8")  # fmt: skip
    out = tmp_path / "out"
    ftdata.build(str(data), out, max_length=256)
    (row,) = collect(out).rows
    weights = [t.weight for t in row.sections[0].tokens if t.label != -100]
    assert 0.5 in weights and None in weights  # the first answer's tokens weigh 0.5, the second's 1 (not marked)
    assert 'data-w="0.5"' in inspect(out).read_text(encoding="utf-8")


@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_distributions_from_counts_equal_numpys_over_the_rows(values: list[int]) -> None:
    """The page keeps a count per length, not the rows (flat memory at any size): its percentiles are the
    nearest-rank ones numpy computes from the rows themselves, every row is in one bin, the mean is exact."""
    from ftdata.inspect.collect import _histogram

    rows = np.array(values)
    histogram = _histogram("tokens", np.bincount(rows))
    for q in (50, 90, 99):
        assert histogram.percentiles[f"p{q}"] == np.percentile(rows, q, method="inverted_cdf")
    assert histogram.percentiles["max"] == rows.max() and histogram.percentiles["mean"] == pytest.approx(rows.mean())
    assert sum(n for *_, n in histogram.bins) == len(rows) and len(histogram.bins) <= 30
    assert histogram.bins[0][0] == rows.min() and histogram.bins[-1][1] == rows.max() + 1


# ---------------------------------------------------------------- in a real browser


def _driver():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no browser: install Debian's chromium and chromium-driver (make test does, as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


@pytest.fixture(scope="module")
def browser(built: Path):
    driver = _driver()
    driver.get((built / PAGE).as_uri())
    yield driver
    driver.quit()


def test_in_a_browser_the_rows_shown_are_the_sample_and_a_trained_token_says_what_it_is(browser, built: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = collect(built, sample=Sample(first=40))
    rows = browser.find_elements(By.CSS_SELECTOR, "article.row")
    assert len(rows) == len(page.rows) == sum(page.split_rows.values())
    assert browser.find_element(By.ID, "shown-rows").text == f"{len(page.rows)} of {len(page.rows)} rows"
    row = next(r for r in page.rows if r.index == 0)
    token = next(t for t in row.sections[0].tokens if t.label != -100)
    first = rows[0].find_element(By.CSS_SELECTOR, f"span.t.tr[data-i='{token.id}']")
    assert first.value_of_css_property("background-color") == "rgba(200, 240, 200, 1)"
    masked = rows[0].find_element(By.CSS_SELECTOR, "span.t:not(.tr)")
    assert masked.value_of_css_property("background-color") == "rgba(0, 0, 0, 0)"
    # keyboard: focus the row's text, then the arrow keys walk its tokens; the status line names each
    pre = rows[0].find_element(By.CSS_SELECTOR, "pre.tokens")
    pre.click()
    pre.send_keys(Keys.ARROW_RIGHT)
    tip = browser.find_element(By.ID, "tip").text
    assert tip.startswith(f"id {row.sections[0].tokens[0].id} ") and tip.endswith("label -100 (masked)")
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))", first)
    assert browser.find_element(By.ID, "tip").text == f"id {token.id}  text {json.dumps(token.text)}  label {token.id} (trained)"


def test_in_a_browser_filtering_by_a_reject_reason_shows_exactly_those_rejects(browser, built: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = collect(built, sample=Sample(first=40))
    Select(browser.find_element(By.ID, "reason")).select_by_value("empty_response")
    visible = [li for li in browser.find_elements(By.CSS_SELECTOR, "li.reject") if li.is_displayed()]
    expected = [r for r in page.rejects if r.code == "empty_response"]
    assert len(visible) == len(expected) == 2
    assert all("empty_response" in li.text for li in visible)
    assert [li.text.split(" ")[1] for li in visible] == [r.location for r in expected]
    Select(browser.find_element(By.ID, "reason")).select_by_value("")
    assert sum(li.is_displayed() for li in browser.find_elements(By.CSS_SELECTOR, "li.reject")) == len(page.rejects)
    # the rows' text filter: the hostile record is found by its text and shown as text
    search = browser.find_element(By.ID, "q")
    search.send_keys("onerror=alert(1)")
    shown_rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "article.row") if r.is_displayed()]
    holding = [r for r in page.rows if "onerror=alert(1)" in "".join(t.text for s in r.sections for t in s.tokens)]
    assert len(shown_rows) == len(holding) == 1
    assert browser.find_element(By.ID, "shown-rows").text == f"{len(holding)} of {len(page.rows)} rows"
    search.clear()


def test_in_a_browser_hostile_records_run_nothing_and_the_page_requests_nothing(browser, built: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    assert not browser.find_elements(By.CSS_SELECTOR, "img:not([src^='data:'])")
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert urls and all(url.startswith(("file://", "data:")) for url in urls), urls
    assert browser.execute_script("return window.__ftdataPwned === undefined")


def test_in_a_browser_the_page_is_not_blank(browser, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20
    assert any(rgb == (200, 240, 200) for _, rgb in colours)  # trained tokens on screen


# ---------------------------------------------------------------- pairs, packed rows, recipes


def test_a_pair_shows_its_prompt_and_both_completions_and_a_packed_row_its_sequences(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    ftdata.build(str(ROOT / "examples/data/dpo_demo_4.json"), pairs, max_length=1024)
    page = collect(pairs)
    row = page.rows[0]
    assert row.side_by_side and [s.title for s in row.sections] == ["prompt", "chosen", "rejected"]
    assert all(t.label == -100 for t in row.sections[0].tokens)  # the prompt carries no loss
    assert all(t.label == t.id for s in row.sections[1:] for t in s.tokens)
    assert row.trained == len(row.sections[1].tokens) + len(row.sections[2].tokens)
    assert [h.name for h in page.histograms] == ["prompt tokens", "chosen tokens", "rejected tokens"]
    counts = json.loads((pairs / "build.json").read_text(encoding="utf-8"))["counts"]
    assert page.trained_share == counts["trained_tokens"] / counts["tokens"] > 0
    kto = tmp_path / "kto"
    ftdata.build(str(ROOT / "examples/data/kto_demo_20.json"), kto, max_length=1024, task="kto")
    rows = collect(kto).rows
    assert {r.label for r in rows} == {"desirable", "undesirable"} and [s.title for s in rows[0].sections] == ["prompt", "completion"]
    packed = tmp_path / "packed"
    ftdata.build(str(ROOT / "examples/data/alpaca_en_demo_20.json"), packed, max_length=512, packing=True)
    page = collect(packed)
    row = page.rows[0]
    lengths = [len(s.tokens) for s in row.sections if s.title.startswith("sequence")]
    assert len(lengths) >= 2 and sum(lengths) == row.total - sum(len(s.tokens) for s in row.sections if s.title == "padding")
    assert row.sections[1].tokens[0].label == -100  # no sequence learns from its neighbour
    assert "sequences per packed row" in [h.name for h in page.histograms]
    html = (inspect(packed)).read_text(encoding="utf-8")
    assert "fill" in html and "sequences per packed row" in html


def test_a_recipe_page_shows_each_sources_share_against_its_target(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    data = ROOT / "examples/data"
    recipe.write_text(
        f"max_length: 512\nmix_by: records\nsources:\n  - data: {data / 'alpaca_en_demo_20.json'}\n    name: alpaca\n    weight: 0.5\n"
        f"  - data: {data / 'chat_demo.jsonl'}\n    name: chat\n    weight: 0.5\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    ftdata.build(str(recipe), out)
    page = collect(out)
    assert [m["source"] for m in page.mix] == ["alpaca", "chat"]
    assert all(m["target"] == "50.0%" for m in page.mix)
    assert "Recipe sources: shares achieved against their targets" in inspect(out).read_text(encoding="utf-8")


def test_a_prompt_set_shows_its_prompt_lengths_and_reward_column_coverage(tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    hostile = "<script>alert(1)</script>"
    records = [{"prompt": [{"role": "user", "content": f"What is {i}+{i}?"}], "answer": str(2 * i), "note": hostile if i == 0 else None}
               for i in range(6)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    ftdata.build(str(data), out, reward_columns={"answer": "string", "note": "string?"})
    page = collect(out)
    assert page.task == "prompts" and [h.name for h in page.histograms] == ["prompt tokens"]
    assert page.coverage == [("answer", "string", 6, "100.0%"), ("note", "string", 1, "16.7%")]
    assert {dict(row.columns)["answer"] for row in page.rows} == {json.dumps(str(2 * i)) for i in range(6)}
    html = inspect(out).read_text(encoding="utf-8")
    assert "Reward columns" in html and hostile not in html and "&lt;script&gt;" in html
