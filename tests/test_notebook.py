"""The notebook API: run_lens on a loaded model, display, save, and saved results on a site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lensreport
from lensreport.errors import LensReportError
from lensreport.results.documents import loads
from conftest import REPO, open_notebook_output, run_cli, write_manifest
from tiny import CHAT_TEMPLATE

COMPARED = ("input_ids", "input_tokens", "layers", "topk_ids", "topk_probs", "entropy",
            "kl_to_final", "next_token_prob", "next_token_rank", "target_prob", "target_rank",
            "tracked_ids", "tracked_probs", "vocab")


def _build_one(tmp_path: Path, folder: Path, text: str, target: str | None) -> dict:
    manifest = write_manifest(tmp_path / "site-build", f"""
        models:
          - {{name: tiny, model: {folder}}}
        prompts:
          - name: p
            text: {json.dumps(text)}
            {f"target: {json.dumps(target)}" if target else ""}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    return loads((tmp_path / "site-build" / "site" / "data" / "tiny" / "p.json").read_text())


@pytest.mark.parametrize("family, tokenizer", [("gpt2", "byte_level"), ("gemma2", "sentencepiece")])
def test_run_lens_gives_the_numbers_build_gives(family, tokenizer, tiny_models, tmp_path,
                                                weights_cache):
    folder = tiny_models(family, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(folder)
    loaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    text, target = "The quick brown fox jumps over the lazy", " dog"
    result = lensreport.run_lens(model, loaded_tokenizer, text, target=target)
    built = _build_one(tmp_path, folder, text, target)
    for field in COMPARED:
        assert result.document[field] == built[field], field
    assert result.entropy.shape == (result.num_rows, len(result.tokens))
    assert result.num_layers == result.document["model"]["num_layers"]
    assert result.entropy.dtype == "float32"
    assert result.topk_tokens.shape == result.topk_ids.shape
    assert result.topk_tokens[-1, -1, 0] == built["vocab"][str(built["topk_ids"][-1][-1][0])]
    assert torch.isnan(torch.tensor(result.next_token_prob[:, -1])).all()


def test_run_lens_rejects_bad_arguments(tiny_models, weights_cache):
    folder = tiny_models("gpt2")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with pytest.raises(LensReportError, match="lens='tuned-ish'"):
        lensreport.run_lens(model, tokenizer, "hi", lens="tuned-ish")
    with pytest.raises(LensReportError, match="top_k=0"):
        lensreport.run_lens(model, tokenizer, "hi", top_k=0)


def test_saved_results_join_the_site(tiny_models, tmp_path, weights_cache):
    folder = tiny_models("llama", "sentencepiece")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    saved = lensreport.run_lens(model, tokenizer, "Hello <b>world</b>", model_name="from-notebook",
                                prompt_name="hello").save(tmp_path / "saved" / "hello.json")
    loaded = lensreport.LensResult.load(saved)
    assert loaded.document == loads(saved.read_text())
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: built, model: {folder}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
        results:
          - saved/*.json
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "from-notebook" in index and "Hello &lt;b&gt;world&lt;/b&gt;" in index
    data = loads((site / "data" / "from-notebook" / "hello.json").read_text())
    assert data["entropy"] == loaded.document["entropy"]
    assert (site / "prompts" / "hello" / "index.html").is_file()
    assert (site / "embed" / "from-notebook" / "hello.html").is_file()
    # A pattern that matches nothing is a manifest error at its line.
    manifest.write_text(manifest.read_text().replace("saved/*.json", "missing/*.json"))
    result = run_cli("build", manifest)
    assert result.returncode == 2
    assert f"{manifest}:6: results: 'missing/*.json' matches no file" in result.stderr


@pytest.mark.slow
@pytest.mark.browser
def test_example_notebook_runs_and_shows_the_figure(tmp_path, demo_site, page):
    """examples/notebook.ipynb, executed headlessly as a user would run it, on the real
    SmolLM2; its numbers equal the demo site's, and its output draws in Chromium."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "examples" / "notebook.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) == 2  # the fox figure, then the comparison
    assert html[0].count('<section class="figure"') == 1
    assert html[1].count('<section class="figure"') == 2
    printed = "".join(o.get("text", "") for o in outputs
                      if o.output_type == "stream" and o.get("name") == "stdout")
    top1_line = next(line for line in printed.splitlines() if line.startswith("top-1"))
    assert top1_line.endswith("' dog']"), top1_line  # the last layer's top-1 is " dog"

    saved = loads((tmp_path / "fox.json").read_text())
    built = loads((demo_site / "data" / "smollm2-135m" / "fox.json").read_text())
    assert saved["input_ids"] == built["input_ids"]
    assert saved["topk_ids"][-1] == built["topk_ids"][-1]
    # The notebook reads block rows; the demo also the rows after each attention.
    assert saved["row_depths"] == list(range(len(saved["entropy"])))
    for depth, ours in enumerate(saved["entropy"]):
        theirs = built["entropy"][built["row_depths"].index(depth)]
        assert ours == pytest.approx(theirs, abs=2e-3)

    page_file = tmp_path / "outputs.html"
    page_file.write_text("<!doctype html><meta charset='utf-8'><body>" + "".join(html)
                         + "</body>", encoding="utf-8")
    page.goto(page_file.as_uri())
    page.wait_for_selector("[id^='lensreport-output-'][data-figures-ready='2']", timeout=60_000)
    assert page.locator(".heatmap .main-svg").count() >= 3
    last_row = page.evaluate("() => { const rows = document.querySelector('.heatmap').data[0].text;"
                             " return rows[rows.length - 1]; }")
    assert last_row[-1] == " dog"
    assert page.errors == []


@pytest.mark.browser
def test_notebook_output_of_a_chat_with_groups_and_generation(tiny_models, weights_cache,
                                                              tmp_path, page, monkeypatch):
    """run_lens(chat=True, generate=N, targets=...) draws as the site does: the group
    metrics, the dimmed chat template and the generated mark."""
    folder = tiny_models("llama")
    model, tokenizer = (AutoModelForCausalLM.from_pretrained(folder),
                        AutoTokenizer.from_pretrained(folder))
    tokenizer.chat_template = CHAT_TEMPLATE
    result = lensreport.run_lens(model, tokenizer, "The quick brown fox", chat=True, generate=3,
                                 targets={"animals": [" the", " fox"], "quick": {"word": "quick"}})
    start, mask = result.generated_from, result.document["template_mask"]
    assert start is not None and any(mask)
    open_notebook_output(page, tmp_path, result, monkeypatch)
    heatmap = page.locator(".lensreport-notebook .heatmap")
    assert heatmap.count() == 1
    before = page.evaluate("el => JSON.stringify(el.data[0].z)", heatmap.element_handle())
    page.locator(".lensreport-notebook .metric-select").select_option("group:animals")
    page.wait_for_function("([el, z]) => JSON.stringify(el.data[0].z) !== z",
                           arg=[heatmap.element_handle(), before], timeout=10_000)
    z = page.evaluate("el => el.data[0].z", heatmap.element_handle())
    expected = result.group_prob("animals")
    assert len(z) == expected.shape[0]
    for got, want in zip(z, expected.tolist()):
        assert got == pytest.approx(want, abs=1e-4)
    shapes = page.evaluate("el => el.layout.shapes.map(s => s.x0)", heatmap.element_handle())
    assert shapes == [start - 0.5]
    dimmed = page.evaluate("""el => [...el.querySelectorAll('.xtick text')]
        .filter(t => t.querySelector('tspan[style*="fill"]') && !t.querySelector('tspan[style*="bold"]'))
        .map(t => t.__data__.x).sort((a, b) => a - b)""", heatmap.element_handle())
    assert dimmed == [i for i, templated in enumerate(mask) if templated]
    assert "Dimmed tokens" in page.locator(".lensreport-notebook .token-legend").inner_text()
    assert page.errors == []
