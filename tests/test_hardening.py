"""Hostile text, broken inputs, interrupted builds: nothing lost, nothing injected."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from conftest import (SMOLLM2, copy_project, lensreport_command, run_cli, static_server, wait_until,
                      write_manifest)

HOSTILE = [
    "<script>alert(1)</script>",
    "</div><img src=x onerror=alert(2)>",
    "&amp; &lt;b&gt; {{ 7*7 }} {% raw %}",
    "<b>bold</b><br><a href=\"javascript:alert(3)\">x</a>",
    "\u202eright-to-left\u200f mark",
    "' \" ` </script><!--",
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hostile_manifest(folder: Path, model: Path, texts: list[str]) -> Path:
    document = {
        "site": {"title": "Hostile <script>alert('t')</script>",
                 "note": "<img src=x onerror=alert('note')> **bold** [x](javascript:alert(1))"},
        "models": [{"name": "m </title><script>alert('m')</script>", "model": str(model),
                    "note": "<script>alert('mn')</script>"}],
        "prompts": [{"name": f"p{i} {text}", "text": text, "note": text}
                    for i, text in enumerate(texts)],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


# The only scripts a page runs: the site's own assets (search ones in pages with a header).
SCRIPTS = {"plotly.min.js", "lensreport.js", "attribution.js", "theme.js", "search-index.js",
           "search.js"}


def check_pages(page, site: Path, texts: list[str]) -> None:
    pages = ["index.html"] + [str(p.relative_to(site)) for p in site.glob("prompts/*/index.html")]
    pages += [str(p.relative_to(site)) for p in site.glob("embed/*/*.html")]
    for path in pages:
        page.goto((site / path).as_uri())
        if path != "index.html":
            page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
        assert page.dialogs == [], (path, page.dialogs)
        assert page.errors == [], (path, page.errors)
        assert page.locator("img").count() == 0, path
        scripts = page.evaluate("() => [...document.scripts].map(s => s.src ? "
                                "s.src.split('/').pop() : s.type)")
        assert set(scripts) <= SCRIPTS | {"application/json"}, scripts
    page.goto((site / "index.html").as_uri())
    body = page.inner_text("body")
    for text in texts:
        visible = " ".join(text.split())
        assert visible in " ".join(body.split()), text


@pytest.mark.browser
def test_hostile_strings_are_shown_literally(tmp_path, tiny_models, weights_cache, page):
    manifest = hostile_manifest(tmp_path, tiny_models("gpt2"), HOSTILE)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    check_pages(page, site, HOSTILE)
    # Plotly text: the tick labels of the heatmap spell the input tokens literally.
    embed = next(site.glob("embed/*/p0-*.html"))
    page.goto(embed.as_uri())
    page.wait_for_selector("html[data-figures-ready]")
    ticks = "".join(page.locator(".heatmap .xtick text").all_text_contents())
    assert ticks.replace("\u00a0", " ") .replace(" ", "") == \
        HOSTILE[0].replace(" ", ""), ticks
    assert "</" not in (site / "index.html").read_text().split("<main>")[1].split(
        "<table")[0].replace("</h1>", "").replace("</p>", "").replace("</div>", "") \
        .replace("</strong>", "").replace("</a>", "")


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@example(["a\rb", "line\u2028sep"])
@example(["next\x85line", "<b>\r\n</b>"])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1,
                        max_size=30).filter(lambda s: s.strip() != ""),
                min_size=1, max_size=3, unique=True))
def test_property_random_text_builds_and_escapes(tmp_path_factory, tiny_models, weights_cache,
                                                 texts):
    """Any text makes a valid site whose JSON round-trips and whose HTML stays inert."""
    folder = tmp_path_factory.mktemp("prop")
    manifest = hostile_manifest(folder, tiny_models("gpt2"), texts)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    # The texts as the manifest holds them: YAML itself folds some line breaks (\x85, …)
    # that PyYAML's dumper writes raw; the site must show exactly what the manifest says.
    texts = [p["text"] for p in yaml.safe_load(manifest.read_text(encoding="utf-8"))["prompts"]]
    for i, text in enumerate(texts):
        data = next((folder / "site" / "data").glob(f"*/p{i}*.json"))
        assert json.loads(data.read_text())["prompt"]["text"] == text
    # Bytes, decoded without newline translation: '\r' must be found as '\r'.
    index = (folder / "site" / "index.html").read_bytes().decode("utf-8")
    for text in texts:
        assert str(escape(text)) in index, text
    for html in (folder / "site").rglob("*.html"):
        content = html.read_bytes().decode("utf-8")
        figures = content.count('<script type="application/json" class="figure-data">')
        named = re.findall(r'<script src="(?:[^"]*/)?([^"/]+)"', content)
        assert {"plotly.min.js", "lensreport.js", "theme.js"} <= set(named) <= SCRIPTS, html
        assert content.count("<script") == len(named) + figures, html  # none inline


# --- The bad input matrix --------------------------------------------------------------


@pytest.mark.parametrize("body, code, fragment", [
    ("", 2, "prompts.yaml:1: the manifest is empty"),
    ("models: [a\n", 2, "not valid YAML"),
    ("models: 3\nprompts: [{name: a, text: b}]\n", 2, "prompts.yaml:1: models: expected"),
    ("prompts: [{name: a, text: b}]\n", 2, "missing required key 'models'"),
    ("models: [{name: m, model: x/y, colour: red}]\nprompts: [{name: a, text: b}]\n", 2,
     "prompts.yaml:1: models[0]: unknown key 'colour'"),
    ("models: [{name: m, model: x/y}, {name: m, model: x/z}]\nprompts: [{name: a, text: b}]\n",
     2, "duplicate name"),
    ("models: [{name: m, model: x/y}]\nprompts: [{name: a, text: ''}]\n", 2,
     "the prompt is empty"),
    ("models: [{name: m, model: x/y, dtype: int3}]\nprompts: [{name: a, text: b}]\n", 2,
     "dtype: expected one of auto, float32, bfloat16, float16"),
    ("models: [{name: m, model: x/y, device: gpu}]\nprompts: [{name: a, text: b}]\n", 2,
     "device: expected auto, cpu, mps, cuda or cuda:N"),
    ("models: [{name: m, model: ./nowhere}]\nprompts: [{name: a, text: b}]\n", 2,
     "prompts.yaml:1: model 'm'.model: "),
    ("models: [{name: m, model: 'package:no_such_pkg/x.gguf'}]\nprompts: [{name: a, text: b}]\n",
     2, "Python package 'no_such_pkg' is not installed"),
])
def test_bad_manifests(tmp_path, body, code, fragment):
    manifest = write_manifest(tmp_path, body)
    result = run_cli("build", manifest)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())


def test_model_folder_without_weights(tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    manifest = write_manifest(tmp_path, f"models: [{{name: m, model: {folder}}}]\n"
                                        "prompts: [{name: a, text: b}]\n")
    result = run_cli("build", manifest)
    assert result.returncode == 2 and "prompts.yaml:1:" in result.stderr
    assert "has no weights" in result.stderr


def test_truncated_gguf_is_a_build_failure(tmp_path, weights_cache):
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 40)
    manifest = write_manifest(tmp_path, f"models: [{{name: m, model: {gguf}}}]\n"
                                        "prompts: [{name: a, text: b}]\n")
    result = run_cli("build", manifest)
    assert result.returncode == 1, result.stderr
    assert "model 'm'" in result.stderr and "GGUF" in result.stderr
    assert "Traceback" not in result.stderr


def test_prompt_longer_than_the_context(tmp_path, tiny_models, weights_cache):
    manifest = write_manifest(tmp_path, f"""
        models:
          - name: m
            model: {tiny_models("gpt2")}
        prompts:
          - name: long
            text: "{'fox ' * 400}"
    """)
    for command in ("validate", "build"):
        result = run_cli(command, manifest)
        assert result.returncode == 2, result.stderr
        assert "prompts.yaml:5: prompt 'long':" in result.stderr
        assert "accepts at most 128" in result.stderr
        assert "loading model" not in result.stderr  # found by the tokenizer, before weights


def test_manifest_error_list_is_capped_and_aliases_are_refused(tmp_path):
    models = "".join(f"  - {{name: m{i}, model: org/m, dtype: bad}}\n" for i in range(15))
    manifest = write_manifest(tmp_path, "models:\n" + models + "prompts: [{name: a, text: b}]\n")
    result = run_cli("validate", manifest)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 11, result.stderr
    assert lines[-1] == f"error: … and 5 more problem(s) in {manifest}"
    bomb = write_manifest(tmp_path, 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: &c [*b, *b]\n'
                                    "models: *c\nprompts: *c\n", name="bomb.yaml")
    result = run_cli("validate", bomb)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bomb}:2: YAML alias *a is not supported in a manifest; write the value out"]


# --- Interrupted builds and a corrupt cache --------------------------------------------


def _slow_manifest(folder: Path) -> Path:
    """The real SmolLM2 on a long prompt: seconds of lens work to interrupt."""
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 20)
    return write_manifest(folder, f"""
        models:
          - name: smol
            model: {SMOLLM2}
        prompts:
          - name: short
            text: The quick brown fox
          - name: long
            text: "{text}"
    """)


def entries(store: Path) -> dict[Path, int]:
    """Results store entries and their inodes (an atomic write makes a new one)."""
    return {path: path.stat().st_ino for path in store.rglob("*.json")}


@pytest.fixture(scope="module")
def short_built(tmp_path_factory, weights_cache):
    """The slow manifest's site with only the short prompt: the previous site to keep."""
    folder = tmp_path_factory.mktemp("short-built")
    first = run_cli("build", _slow_manifest(folder), "--only-prompt", "short")
    assert first.returncode == 0, first.stderr
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_killed_build_keeps_the_previous_site(tmp_path, short_built, how):
    manifest = copy_project(short_built, tmp_path) / "prompts.yaml"
    before = snapshot(tmp_path / "site")
    stored = entries(tmp_path / ".lensreport-cache")
    assert len(stored) == 1
    # SIGINT as a terminal delivers it: a suite started in the background (nohup, `make
    # test &`) may pass an ignored SIGINT on, and Python then keeps ignoring it.
    process = subprocess.Popen(lensreport_command() + ["build", str(manifest), "--clean"],
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Prompts run shortest first: once the short prompt's entry is written again, the
        # process is in the long prompt's forward pass and lens work.
        wait_until(lambda: process.poll() is not None
                   or entries(tmp_path / ".lensreport-cache") != stored, 300,
                   "the short prompt's result to be recomputed")
        assert process.poll() is None, "the build finished before it could be interrupted"
        process.send_signal(how)
        process.wait(timeout=60)
        stderr = process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()
    # SIGINT is a user's Ctrl-C: exit code 130 and a line saying nothing was lost.
    assert process.returncode == (130 if how == signal.SIGINT else -signal.SIGKILL), stderr
    if how == signal.SIGINT:
        assert "interrupted" in stderr
    assert snapshot(tmp_path / "site") == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".site.")]
    assert how == signal.SIGKILL or not leftovers
    for entry in (tmp_path / ".lensreport-cache").rglob("*.json"):
        json.loads(entry.read_text())  # every cache entry is whole
    again = run_cli("build", manifest)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "site/prompts/long/index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.building")]


def test_corrupt_cache_entry_is_recomputed_with_a_warning(tmp_path, tiny_models, weights_cache):
    manifest = write_manifest(tmp_path, f"""
        models:
          - name: m
            model: {tiny_models("gpt2")}
        prompts:
          - name: a
            text: hello world
    """)
    assert run_cli("build", manifest).returncode == 0
    entries = list((tmp_path / ".lensreport-cache").rglob("*.json"))
    assert len(entries) == 1
    entries[0].write_text('{"schema_version": 1, "truncated')
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert "warning: results cache entry" in result.stderr
    assert "1 run(s) computed" in result.stderr
    json.loads(entries[0].read_text())


@pytest.mark.browser
def test_hostile_target_tokens_and_site_url_stay_text(tmp_path, weights_cache, page):
    """Markup that is a single token (as '<b>', '<br>' and '<a href=…>' are in Gemma's
    vocabulary) reaches Plotly's colorbar title, hover and legend as text, on every page."""
    import tiny

    tokenizer = tiny.byte_level_tokenizer()
    tokenizer.add_tokens(["<b>", "<br>", "<a href=x>"])
    model = tiny.save_tiny_model("gpt2", tmp_path / "model", tokenizer)
    manifest = write_manifest(tmp_path, f"""
        site:
          site_url: "https://example.org/x'&y=1"
        models:
          - {{name: "m<b>", model: {model}}}
        prompts:
          - {{name: "bold <i>", text: "Hello <b> world", target: "<b>"}}
          - {{name: br, text: "Hello <br> world", target: "<br>"}}
          - {{name: link, text: "a <a href=x> link", target: "<a href=x>"}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert "tracking the first" not in result.stderr  # each target is one token
    site = tmp_path / "site"
    with static_server(site) as base:  # embeds fetch their documents
        check_target_titles(page, site, base)


def check_target_titles(page, site, base: str) -> None:
    for path in sorted(site.glob("prompts/*/index.html")) + sorted(site.glob("embed/*/*.html")) \
            + sorted(site.glob("models/*/index.html")):
        page.goto(base + path.relative_to(site).as_posix())
        page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
        page.wait_for_function("() => lensreport.figures.every(f => !f.partial)",
                               timeout=30_000)
        for section in page.locator("section.figure").all():
            section.locator(".metric-select").select_option("target")
            title = section.locator(".heatmap .cbtitle").text_content()
            assert title.startswith('P(target "<'), (path, title)
            assert section.locator(".heatmap .cbtitle tspan[style*='bold'], "
                                   ".heatmap .cbtitle a").count() == 0
        assert page.errors == [] and page.dialogs == []
        assert page.locator("a[href='x']").count() == 0
    snippet = (site / "prompts" / "br" / "index.html").read_text(encoding="utf-8")
    # The embed snippet is text in a <textarea>: its src attribute is escaped for the blog
    # post it will be pasted into (&#39;, &amp;), and escaped again for the page. (A quote
    # or a space in site_url is refused at its line: test_output_paths.)
    assert 'src=&#34;https://example.org/x&amp;#39;&amp;amp;y=1/embed/' in snippet
    assert "x'&y" not in snippet


# --- Text that cannot be encoded or drawn (lensreport/text.py) --------------------------


# Special tokens as a hostile tokenizer may have them: a formula with an escape sequence, a
# bidi override and a zero-width space; controls a browser and XML refuse; an isolate, a
# line separator and a byte-order mark. The tiny model predicts them in this order.
SPECIALS = ['=\u202e\u200b\x1b[31mHYPERLINK("http://evil.example/","click")',
            "<ctl\x00\x08\x7f>", "\u2066iso\u2028late\ufeff"]


def _printable(text: str) -> bool:
    return all(line.isprintable() for line in text.split("\n"))


def test_hostile_special_tokens_and_names_reach_pages_figures_and_files_visible(
        tmp_path, weights_cache):
    """Control, bidi and invisible characters in special tokens (a cell's top-1, its top-k,
    input tokens) and in names and titles are shown as ⟨U+XXXX⟩ everywhere: the PNG and SVG
    export works (the SVG is well-formed XML), page titles and headings keep their order,
    the CSV neutralises the formula, and nothing non-printable reaches the terminal."""
    import xml.etree.ElementTree as ElementTree

    import tiny
    from lensreport.text import visible

    model = tiny.save_special_token_model(tmp_path / "model", SPECIALS)
    manifest = tmp_path / "prompts.yaml"
    manifest.write_text(yaml.safe_dump({
        "site": {"title": "Ti\u202etle\x07", "export": ["png", "svg"], "csv_files": True},
        "models": [{"name": "m\x07\u202e", "model": str(model)}],
        "prompts": [{"name": "p\x1b\u202e\u2028x", "text": f"Hi {SPECIALS[0]} and{SPECIALS[2]}"}],
    }, allow_unicode=True), encoding="utf-8")
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert _printable(result.stderr), result.stderr
    site = tmp_path / "site"
    model_name, prompt_name = "m⟨U+0007⟩⟨U+202E⟩", "p⟨U+001B⟩⟨U+202E⟩⟨U+2028⟩x"
    # Static figures: the SVG parses, every label in it is printable, the PNG is a PNG.
    [svg] = site.glob("figures/*/*.svg")
    labels = [el.text or "" for el in ElementTree.parse(svg).iter() if el.tag.endswith("text")]
    assert labels and all(label.isprintable() for label in labels), labels
    shown = "".join(labels).replace("\u00a0", " ")
    assert f"{model_name} · {prompt_name}" in shown
    assert "=⟨U+202E⟩…" in shown  # the top-1 special token, in its cells
    [png] = site.glob("figures/*/*.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The document shows every special token visibly; the prompt's text stays exact.
    [data] = site.glob("data/*/*.json")
    document = json.loads(data.read_text(encoding="utf-8"))
    assert all(text.isprintable() for text in document["vocab"].values())
    assert visible(SPECIALS[1]) in document["vocab"].values()
    assert document["prompt"]["text"] == f"Hi {SPECIALS[0]} and{SPECIALS[2]}"
    # CSV: printable, and the top-1 token (a formula) neutralised by a leading quote.
    [csv_file] = [p for p in site.glob("data/*/*.csv") if ".attribution." not in p.name]
    # The attribution CSV's token cells follow the same rule (visible, formulas quoted).
    [attribution] = site.glob("data/*/*.attribution.csv")
    attributed = list(csv.reader(io.StringIO(attribution.read_text(encoding="utf-8"))))
    assert _printable(attribution.read_text(encoding="utf-8").replace("\r\n", "\n"))
    assert "'" + visible(SPECIALS[0]) in {row[1] for row in attributed[1:]}
    rows = list(csv.reader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert _printable(csv_file.read_text(encoding="utf-8").replace("\r\n", "\n"))
    top1 = rows[0].index("top1_token")
    assert {row[top1] for row in rows[1:]} == {"'" + visible(SPECIALS[0])}
    assert "'" + visible(SPECIALS[0]) in [row[2] for row in rows[1:]]  # an input token
    # Pages: titles, headings and the search index in order, names as the manifest keeps them.
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        for tag in ("title", "h1"):
            for text in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S):
                assert text.isprintable(), (path, tag, text)
    prompt_page = next(site.glob("prompts/*/index.html")).read_text(encoding="utf-8")
    assert f"<h1>Prompt: {prompt_name}</h1>" in prompt_page
    assert "<title>" + str(escape(f"{prompt_name} · Ti⟨U+202E⟩tle⟨U+0007⟩")) in prompt_page
    index = (site / "assets" / "search-index.js").read_text(encoding="utf-8")
    entries = json.loads(index[index.index("["):index.rindex("]") + 1])
    assert {e["t"] for e in entries} >= {model_name, prompt_name}
    assert all(_printable(e["t"] + e["s"]) for e in entries), entries


@pytest.mark.parametrize("line, before, after", [
    (2, 'title: "T"', 'title: "T\\ud800"'),
    (3, 'note: "N"', 'note: "N\\udfff"'),
    (5, 'name: "m"', 'name: "m\\ud800"'),
    (9, 'text: "fox"', 'text: "fox \\ud83e\\udd8a"'),
    (11, '"g": [" dog"]', '"g\\ud800": [" dog"]'),
    (12, 'content: "c"', 'content: "\\udc00"'),
])
def test_a_surrogate_in_any_manifest_text_is_an_error_at_its_line(tmp_path, line, before,
                                                                   after):
    """A lone surrogate (a "\\ud800" escape) is no character: validate and build both say so
    in one line at its line, before any tokenizer or page sees it."""
    body = textwrap.dedent("""\
        site:
          title: "T"
          note: "N"
        models:
          - name: "m"
            model: org/model
        prompts:
          - name: "a"
            text: "fox"
            targets:
              "g": [" dog"]
          - {name: b, messages: [{role: user, content: "c"}]}
    """)
    assert before in body.splitlines()[line - 1]
    manifest = write_manifest(tmp_path, body.replace(before, after))
    for command in ("validate", "build"):
        result = run_cli(command, manifest)
        assert result.returncode == 2, result.stderr
        [error] = result.stderr.splitlines()
        assert error.startswith(f"error: {manifest}:{line}: this text holds U+D"), error
        assert "surrogate" in error and "Traceback" not in result.stderr
    if "\\ud83e\\udd8a" in after:
        assert "stands for U+1F98A: write \\U0001F98A" in error


@pytest.mark.parametrize("escape_sequence, code", [("\\L", "2028"), ("\\P", "2029"),
                                                   ("\\N", "0085")])
def test_an_error_with_a_line_separator_is_one_line(tmp_path, escape_sequence, code):
    """U+2028, U+2029 and NEL break lines for splitlines() and terminals: an error line
    keeps them as ⟨U+XXXX⟩."""
    manifest = write_manifest(tmp_path, f'models: [{{name: m, model: "./no{escape_sequence}'
                                        'where"}]\nprompts: [{name: a, text: b}]\n')
    result = run_cli("validate", manifest)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {manifest}:1: model 'm'.model: {tmp_path}/no⟨U+{code}⟩where does not exist "
        "(relative paths start at the manifest's folder)"], result.stderr
