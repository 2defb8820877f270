"""A notebook output's figures follow the notebook's theme (a dark JupyterLab included): the
colours come from where the output is, not from the page root."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

import lensreport


@pytest.mark.browser
def test_notebook_figure_follows_a_dark_notebook(tiny_models, weights_cache, tmp_path, page):
    folder = tiny_models("gpt2")
    model, tokenizer = (AutoModelForCausalLM.from_pretrained(folder),
                        AutoTokenizer.from_pretrained(folder))
    result = lensreport.run_lens(model, tokenizer, "The quick brown fox", target=" fox")
    again = lensreport.run_lens(model, tokenizer, "The quick brown fox", target=" fox")
    assert again.document == result.document  # the second call reuses the head discovery
    html = lensreport.api.notebook_html([result])
    # A dark notebook: light text on a dark page, as JupyterLab's dark theme renders outputs.
    page_file = tmp_path / "notebook.html"
    page_file.write_text("<!doctype html><html><body style='background:#111;color:#eeeeee'>"
                         f"<div class='jp-OutputArea'>{html}</div><script>"
                         "window.lensreport.mount(document.querySelector('.jp-OutputArea'))"
                         "</script></body></html>", encoding="utf-8")
    page.goto(page_file.as_uri())
    page.wait_for_selector(".lensreport-notebook .heatmap .main-svg")
    colour = page.evaluate("getComputedStyle(document.querySelector("
                           "'.lensreport-notebook .heatmap .gtitle, "
                           ".lensreport-notebook .heatmap .xtick text')).fill")
    assert colour == "rgb(238, 238, 238)", colour  # the notebook's text colour
    background = page.evaluate("getComputedStyle(document.querySelector("
                               "'.lensreport-notebook .heatmap .main-svg')).backgroundColor")
    assert background in ("rgba(0, 0, 0, 0)", "transparent"), background
    assert page.errors == []
