"""Long prompts: pages carry the first view only, fetch the rest over HTTP, say so on
file://, and pan through the tokens with a range slider instead of a mile-wide canvas."""

from __future__ import annotations

import json
import re

import pytest

import tiny
from conftest import run_cli, static_server, write_manifest
from lensreport.results.documents import loads, unpack_grid


@pytest.fixture(scope="module")
def long_site(tmp_path_factory, weights_cache):
    folder = tmp_path_factory.mktemp("long")
    tokenizer = tiny.sentencepiece_tokenizer()
    config = dict(tiny.ARCHITECTURES["llama"], max_position_embeddings=4096)
    tiny.ARCHITECTURES["llama-long"] = config
    model = tiny.save_tiny_model("llama-long", folder / "model", tokenizer)
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 130)
    manifest = write_manifest(folder, f"""
        models:
          - {{name: tiny, model: {model}}}
        prompts:
          - {{name: long, text: "{text}", target: " dog"}}
          - {{name: short, text: "The quick brown fox"}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    return folder / "site"


@pytest.fixture(scope="module")
def served(long_site):
    with static_server(long_site) as url:
        yield url


def test_long_figures_inline_the_first_view_only(long_site):
    page = (long_site / "prompts" / "long" / "index.html").read_bytes()
    full = (long_site / "data" / "tiny" / "long.json").read_bytes()
    assert b'"partial":true' in page and b"tracked_probs" not in page
    assert b'"fetch":["../../data/tiny/long.json"]' in page  # the one copy of the numbers
    assert len(page) < len(full) / 3
    # Its entropy at 2 decimals, as the hover shows it (the document keeps 4).
    inline = json.loads(re.search(rb'<script type="application/json" class="figure-data">'
                                  rb'(.*?)</script>', page, re.S).group(1))["documents"][0]
    assert inline["entropy"]["codec"] == "fixed2"
    document = loads(full)
    shown = inline["positions"]
    assert unpack_grid(inline["entropy"]) == [
        None if row is None else [round(v * 100) / 100 for v in row[:shown]]
        for row in document["entropy"]]
    short = (long_site / "prompts" / "short" / "index.html").read_bytes()
    assert b'"partial"' not in short and b"tracked_probs" in short and b'"fetch":null' in short
    assert not list(long_site.rglob("*.figure.json"))


@pytest.mark.browser
def test_http_loads_the_rest_after_the_first_view(served, page):
    page.goto(served + "prompts/long/index.html")
    page.wait_for_selector("html[data-figures-ready]", timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('.metric-select option')]"
                           ".some(o => o.value === 'kl')", timeout=60_000)
    options = page.locator(".metric-select option").all_inner_texts()
    assert any(o.startswith("P(target") for o in options)
    layout = page.evaluate("() => document.querySelector('.heatmap').layout.xaxis")
    assert layout["rangeslider"]["visible"] and layout["range"][1] < 200
    width = page.evaluate("() => document.querySelector('.heatmap').getBoundingClientRect().width")
    assert width < 2000  # not one column of 62 px per token
    assert page.locator(".trajectory .main-svg").count() >= 1  # the target, once loaded
    assert page.locator(".figure-note").is_hidden()
    assert page.errors == []


@pytest.mark.browser
def test_file_pages_say_what_they_cannot_load(long_site, page):
    page.goto((long_site / "prompts" / "long" / "index.html").as_uri())
    page.wait_for_selector("html[data-figures-ready]", timeout=60_000)
    note = page.locator(".figure-note")
    note.wait_for(timeout=10_000)
    assert "web server" in note.inner_text()
    options = page.locator(".metric-select option").all_inner_texts()
    assert options == ["Entropy (nats)"]  # the first view: entropy and the top-1 token
    z = page.evaluate("() => document.querySelector('.heatmap').data[0].z")
    assert len(z) == 4 and len(z[0]) > 1024
    assert page.errors == []
