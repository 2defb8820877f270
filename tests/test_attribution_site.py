"""The "what wrote it" panel and sub-layer rows on pages, in real Chromium: a click on a
cell opens the panel, its bars are the document's attributions, switching the token changes
them, the block × head heatmap shows on a Llama; the heatmap places rows by row_depths; the
attribution CSV holds the document's numbers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from conftest import run_cli, write_manifest
from lensreport.results.documents import loads
from lensreport.site.figures import first_view
from lensreport.site.tables import attribution_csv
from test_jacobian_site import open_page, pick_cell

TEXT = "The quick brown fox jumps over the lazy"


@pytest.fixture(scope="module")
def sublayer_site(tmp_path_factory, tiny_models, weights_cache):
    folder = tiny_models("llama", "sentencepiece")
    root = tmp_path_factory.mktemp("attribution-site")
    manifest = write_manifest(root, f"""
        lens: {{rows: sublayer}}
        models:
          - {{name: tiny, model: {folder}}}
        prompts:
          - {{name: fox, text: "{TEXT}", target: " dog"}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    site = root / "site"
    return site, loads((site / "data/tiny/fox.json").read_text())


def test_the_attribution_csv_holds_the_documents_numbers(sublayer_site):
    site, document = sublayer_site
    field = document["decomposition"]
    assert not (site / "data/tiny/fox.attribution.csv").exists()  # no site.csv_files
    rows = list(csv.reader(io.StringIO(attribution_csv(document))))
    assert rows[0] == ["position", "token", "component", "attribution"]
    cells = {(int(p), c, t): float(v) for p, t, c, v in rows[1:]}
    heads = len(field["heads"]["attrs"][0])
    per_token = len(field["components"]) + len(field["heads"]["attrs"]) * heads
    assert len(rows) - 1 == per_token * sum(map(len, field["token_ids"]))
    position, j = 3, 1
    token = document["vocab"][str(field["token_ids"][position][j])]
    assert cells[(position, "mlp.2", token)] == field["attrs"][4][position][j]
    assert cells[(position, "attn.3.head1", token)] == field["heads"]["attrs"][2][1][position][j]
    # A long prompt's inline first view keeps the sub-layer rows' depths (not the default).
    depths = first_view(document)["row_depths"]
    assert depths == document["row_depths"] and depths[:3] == [0, 0.5, 1]


@pytest.mark.browser
def test_the_browser_writes_the_attribution_csv(sublayer_site, page):
    """A click on "attribution CSV" saves what tables.attribution_csv writes, byte for byte."""
    site, document = sublayer_site
    open_page(page, (site / "prompts/fox/index.html").as_uri())
    link = page.locator('section.figure a[data-csv-of="attribution"]')
    assert link.count() == 1
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "fox.attribution.csv"
    written = Path(download.value.path()).read_bytes().decode("utf-8")
    assert written == attribution_csv(document) and written.count("\r\n") > 1000


@pytest.mark.browser
def test_a_click_opens_what_wrote_it(sublayer_site, page):
    site, document = sublayer_site
    field = document["decomposition"]
    open_page(page, (site / "prompts/fox/index.html").as_uri())
    section = page.locator("section.figure").first
    heatmap = section.locator(".heatmap")
    # Rows placed by depth: 0, 0.5, 1, … (a row after each attention).
    assert page.evaluate("el => el.data[0].y", heatmap.element_handle()) == \
        document["row_depths"]
    assert section.locator(".attribution").is_hidden()
    position, row = 4, 2  # a block row (the heatmap places rows by depth)
    pick_cell(page, heatmap, row, position, section.locator(".token-picker").element_handle(),
              f"el => el.textContent.includes('position {position} ')")
    panel = section.locator(".attribution")
    panel.wait_for(state="visible", timeout=10_000)
    bars = panel.locator(".attribution-bars")
    page.wait_for_function("el => el.data && el.data.length === 3", arg=bars.element_handle(),
                           timeout=10_000)

    def drawn():
        return page.evaluate("el => el.data.map(t => t.y)", bars.element_handle())

    blocks = len(field["components"]) // 2 - 1
    attn, mlp, running = drawn()
    assert attn == [field["attrs"][2 * b - 1][position][0] for b in range(1, blocks + 1)]
    assert mlp == [field["attrs"][2 * b][position][0] for b in range(1, blocks + 1)]
    logit = sum(values[position][0] for values in field["attrs"])
    assert running[-1] == pytest.approx(logit, abs=1e-6)
    options = panel.locator(".attribution-token option").all_inner_texts()
    assert len(options) == len(field["token_ids"][position])
    assert options[0].startswith("top-1") and any("next token" in o for o in options)
    assert any("target" in o for o in options)
    # Another token: other bars.
    panel.locator(".attribution-token").select_option("2")
    page.wait_for_function("([el, y]) => JSON.stringify(el.data[0].y) !== y",
                           arg=[bars.element_handle(), str(attn).replace(" ", "")],
                           timeout=10_000)
    attn2 = drawn()[0]
    assert attn2 == [field["attrs"][2 * b - 1][position][2] for b in range(1, blocks + 1)]
    # The block × head heatmap: heads × blocks, the document's numbers.
    heads = panel.locator(".attribution-heads")
    z = page.evaluate("el => el.data[0].z", heads.element_handle())
    per = field["heads"]["attrs"]
    assert z == [[per[b][h][position][2] for b in range(blocks)] for h in range(len(per[0]))]
    assert page.errors == []


@pytest.mark.browser
def test_the_notebook_output_has_the_panel(tmp_path, tiny_models, weights_cache, page,
                                           monkeypatch):
    """LensResult's output (the site's renderer, scripts inlined) opens the same panel."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lensreport.api import run_lens

    folder = tiny_models("llama", "sentencepiece")
    model = AutoModelForCausalLM.from_pretrained(folder)
    result = run_lens(model, AutoTokenizer.from_pretrained(folder), TEXT, model_name="tiny")
    field = result.document["decomposition"]
    position = 3
    bars = _notebook_panel(page, tmp_path, result, monkeypatch, position, series=3)
    attn = page.evaluate("el => el.data[0].y", bars.element_handle())
    assert attn == [field["attrs"][2 * b - 1][position][0] for b in (1, 2, 3)]
    assert page.errors == []


@pytest.mark.browser
def test_the_panel_draws_three_part_blocks_by_name(tmp_path, tokenizers, page, monkeypatch):
    """Falcon-H1 (blocks of Mamba, attention and MLP): one bar series per part name, each the
    document's numbers, and the running total ends at the sum of every component."""
    from transformers import AutoModelForCausalLM

    import tiny
    from lensreport.api import run_lens

    tokenizer = tokenizers["byte_level"]
    folder = tiny.save_any_family("falcon_h1", tmp_path / "falcon_h1", tokenizer)
    result = run_lens(AutoModelForCausalLM.from_pretrained(folder).eval(), tokenizer, TEXT,
                      model_name="hybrid")
    field = result.document["decomposition"]
    names = ("mamba", "self_attn", "feed_forward")
    assert field["components"][1:4] == [f"{name}.1" for name in names] and field["heads"] is None
    position = 3
    bars = _notebook_panel(page, tmp_path, result, monkeypatch, position, series=4)
    traces = page.evaluate("el => el.data.map(t => [t.name, t.x, t.y])", bars.element_handle())
    blocks = (len(field["components"]) - 2) // 3  # embed, 3 parts per block, bias
    for (label, xs, ys), name in zip(traces, names):
        assert label == name and xs == list(range(1, blocks + 1))
        assert ys == [field["attrs"][field["components"].index(f"{name}.{b}")][position][0]
                      for b in range(1, blocks + 1)]
    logit = sum(values[position][0] for values in field["attrs"])
    assert traces[3][0] == "running total" and traces[3][2][-1] == pytest.approx(logit, abs=1e-6)
    assert page.locator("section.figure .attribution-heads").first.is_hidden()
    assert page.errors == []


def test_static_figures_label_rows_by_depth():
    from lensreport.site.static_figures import heatmap_parts

    doc = {"layers": [0, 1, 2], "row_depths": [0, 0.5, 1], "input_ids": [0, 1], "vocab": {},
           "entropy": [[1.0, 1.0]] * 3, "topk_ids": [[[0], [1]]] * 3}
    (part,) = heatmap_parts(doc, "title")
    axis = part["layout"]["yaxis"]
    assert axis["tickvals"] == [0, 1, 2] and axis["ticktext"] == ["0", "0.5", "1"]


def _notebook_panel(page, tmp_path, result, monkeypatch, position: int, series: int):
    """The notebook output of ``result`` with row 1's cell at ``position`` picked: its
    attribution bars once they draw ``series`` traces."""
    from conftest import open_notebook_output

    open_notebook_output(page, tmp_path, result, monkeypatch)
    section = page.locator("section.figure").first
    pick_cell(page, section.locator(".heatmap"), 1, position,
              section.locator(".token-picker").element_handle(),
              f"el => el.textContent.includes('position {position} ')")
    bars = section.locator(".attribution-bars")
    page.wait_for_function(f"el => el.data && el.data.length === {series}",
                           arg=bars.element_handle(), timeout=10_000)
    return bars
