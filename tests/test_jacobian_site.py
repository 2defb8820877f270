"""The Jacobian lens on pages: a row it does not cover (the embeddings row) is blank in the
heatmap, says so on hover, and is a gap in every line (trajectories, the depth comparison,
corpus curves and their bands) — never another lens's numbers. Checked in real Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import lensreport
from conftest import open_notebook_output, run_cli, static_server, write_manifest
from lensreport.api import LensResult
from lensreport.results.metrics import CORPUS_METRICS, MIN_INTERVAL_DOCUMENTS
from lensreport.site.figures import first_view, summary
from lensreport.results.documents import loads

TEXT = "The quick brown fox jumps over the lazy"
DOCS = ["The capital of France is Paris.", "one two three four five",
        "Hello world! true True TRUE false", "The lazy dog sleeps.",
        "def add(a, b): return a", "The quick brown fox jumps over the lazy dog."]
GAP = "no Jacobian lens reading for this row"
NUMBERS = re.compile(r"\d\.\d|%|nats|entropy|rank|KL")


def write_jacobian(path: Path, folder: Path) -> Path:
    config = AutoConfig.from_pretrained(folder)
    layers, width = config.num_hidden_layers, config.hidden_size
    generator = torch.Generator().manual_seed(0)
    torch.save({"J": {layer: (torch.eye(width) + 0.3 * torch.randn(width, width,
                                                                   generator=generator)).half()
                      for layer in range(layers - 1)},
                "n_prompts": 3, "source_layers": list(range(layers - 1)), "d_model": width},
               path)
    return path


@pytest.fixture(scope="module")
def jacobian_site(tmp_path_factory, tiny_models, weights_cache):
    folder = tiny_models("llama", "sentencepiece")
    root = tmp_path_factory.mktemp("jacobian-site")
    write_jacobian(root / "j.pt", folder)
    (root / "corpus.txt").write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
    manifest = write_manifest(root, f"""
        lens: {{kinds: [logit, jacobian], jacobian: j.pt}}
        models:
          - {{name: tiny, model: {folder}}}
        prompts:
          - {{name: fox, text: "{TEXT}", target: " dog"}}
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 120, context: 16}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    site = root / "site"
    document = loads((site / "data/tiny/fox.jacobian.json").read_text())
    curves = loads((site / "data/corpora/docs/tiny.jacobian.json").read_text())
    assert document["lens"]["rows"] == list(range(1, len(document["layers"])))
    assert curves["corpus"]["documents"] >= MIN_INTERVAL_DOCUMENTS
    return site, folder, document, curves


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)


def switch_to_jacobian(page, section) -> None:
    options = section.locator(".lens-select option").all_inner_texts()
    assert options == ["logit lens", "Jacobian lens"]
    before = page.evaluate("el => JSON.stringify(el.data[0].z)",
                           section.locator(".heatmap").element_handle())
    section.locator(".lens-select").select_option("1")
    page.wait_for_function("([el, z]) => JSON.stringify(el.data[0].z) !== z",
                           arg=[section.locator(".heatmap").element_handle(), before],
                           timeout=10_000)


def cell_point(page, heatmap, layer: int, position: int) -> tuple[float, float]:
    """Where Plotly draws cell (layer, position), in page coordinates."""
    heatmap.scroll_into_view_if_needed()
    x, y = page.evaluate("""([el, layer, position]) => {
        const layout = el._fullLayout;
        return [layout.xaxis._offset + layout.xaxis.l2p(position),
                layout.yaxis._offset + layout.yaxis.l2p(layer)];
    }""", [heatmap.element_handle(), layer, position])
    # A tall heatmap (sub-layer rows) may hold the cell below the window: bring it in.
    page.evaluate("""([el, y]) => {
        const top = el.getBoundingClientRect().top + y;
        if (top < 20 || top > innerHeight - 20) window.scrollBy(0, top - innerHeight / 2);
    }""", [heatmap.element_handle(), y])
    box = heatmap.bounding_box()
    return box["x"] + x, box["y"] + y


def click_cell(page, heatmap, layer: int, position: int) -> None:
    """Click a cell as a reader does: hover it first (Plotly's click reports the point its
    throttled hover last found, so a click that outruns the hover hits the previous cell)."""
    x, y = cell_point(page, heatmap, layer, position)
    x -= 6  # a little left of the centre: the mode bar floats over the top right
    page.mouse.move(x + 4, y + 2)
    page.mouse.move(x, y)
    # The hover label of this very cell (a previous cell's label may still be showing).
    page.wait_for_function("([el, want]) => [...el.querySelectorAll('.hoverlayer .hovertext')]"
                           ".some(h => h.textContent.includes(want))",
                           arg=[heatmap.element_handle(), f"layer {layer} · position {position}"],
                           timeout=10_000)
    page.mouse.down()
    page.mouse.up()


def pick_cell(page, heatmap, layer: int, position: int, picker, shown: str) -> None:
    """Click a cell until the token picker shows what ``shown`` (a JS predicate on the
    picker) expects. Picking a cell is idempotent; Plotly now and then drops a click that
    follows a redraw on a loaded machine (about 1 in 20 runs here), which is not what this
    test is about — three tries, each waiting on the condition."""
    for attempt in range(3):
        click_cell(page, heatmap, layer, position)
        try:
            page.wait_for_function(shown, arg=picker, timeout=4_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: click again
            if attempt == 2:
                raise


def hover_text(page, heatmap, layer: int, position: int) -> str:
    x, y = cell_point(page, heatmap, layer, position)
    page.mouse.move(x + 4, y + 2)
    page.mouse.move(x, y)
    hover = heatmap.locator(".hoverlayer .hovertext")
    hover.first.wait_for(timeout=10_000)
    assert hover.count() == 1
    text = hover.first.text_content()
    page.mouse.move(1, 1)  # away: the next hover starts from nothing
    hover.first.wait_for(state="detached", timeout=10_000)
    return text


@pytest.mark.browser
def test_the_page_and_summary_leave_the_uncovered_row_blank(jacobian_site, page):
    """The document as the browser reads it (lensreport.js fromDocument): nulls of the row's
    full shape at the uncovered row (the flat layout is kept), numbers everywhere else."""
    site, _, document, _ = jacobian_site
    layers, length = len(document["layers"]), len(document["input_ids"])
    page.goto((site / "prompts/fox/index.html").as_uri())
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
    page.locator(".lens-select").select_option("1")
    data = page.evaluate("() => lensreport.figures[0].d")
    k = data["k"]
    assert data["rows"] == document["lens"]["rows"]
    assert data["gap_text"] == GAP
    assert len(data["entropy"]) == layers * length
    assert len(data["topk_ids"]) == layers * length * k
    assert data["entropy"][:length] == [None] * length
    assert data["topk_ids"][:length * k] == [None] * (length * k)
    assert data["target_prob"][:length] == [None] * length
    for position, ids in enumerate(document["tracked_ids"]):
        assert len(data["tracked_probs"][position]) == layers * len(ids)
        assert data["tracked_probs"][position][:len(ids)] == [None] * len(ids)
        assert None not in data["tracked_probs"][position][len(ids):]
    assert data["entropy"][length] == document["entropy"][1][0]
    logit = page.evaluate("() => lensreport.figures[0].variants[0]")
    assert logit["rows"] is None and None not in logit["entropy"]
    assert not page.errors, page.errors
    light = first_view(document)  # what a long prompt's page inlines
    assert light["entropy"][0] is None and None not in light["entropy"][1:]
    assert light["topk_ids"][0] is None and all(light["topk_ids"][1:])
    assert light["lens"]["rows"] == document["lens"]["rows"]
    facts = summary(document)
    assert 1 <= facts["first_layer"] <= facts["settled_layer"] <= layers - 1
    # The index page's summary and the corpus table come out, blank where uncovered.
    assert "top guess from layer" in (site / "index.html").read_text()
    corpus_page = (site / "corpora/docs/index.html").read_text()
    assert corpus_page.count(f'<td class="gap" title="{GAP}">–</td>') == len(CORPUS_METRICS)


def test_lens_result_arrays_have_nan_rows(jacobian_site):
    site, _, document, _ = jacobian_site
    result = LensResult.load(site / "data/tiny/fox.jacobian.json")
    assert result.rows == document["lens"]["rows"]
    assert result.covered.tolist() == [False] + [True] * (result.num_rows - 1)
    for array in (result.entropy, result.kl_to_final, result.topk_probs, result.target_prob):
        assert array.dtype.kind == "f" and array.shape[0] == result.num_rows
        assert torch.isnan(torch.from_numpy(array[0])).all()
        assert not torch.isnan(torch.from_numpy(array[1:])).any()
    assert result.entropy[1, 0] == pytest.approx(document["entropy"][1][0])
    assert (result.topk_ids[0] == -1).all() and (result.topk_ids[1:] >= 0).all()
    assert (result.target_rank[0] == -1).all()
    assert set(result.topk_tokens[0].reshape(-1).tolist()) == {None}
    assert result.topk_tokens[1, 0, 0] == document["vocab"][str(document["topk_ids"][1][0][0])]
    logit = LensResult.load(site / "data/tiny/fox.json")
    assert logit.covered.all() and not torch.isnan(torch.from_numpy(logit.entropy)).any()


@pytest.mark.browser
def test_the_prompt_page_shows_blank_cells_for_the_jacobian_lens(jacobian_site, page):
    site, _, document, _ = jacobian_site
    open_page(page, (site / "prompts/fox/index.html").as_uri())
    sections = page.locator("section.figure")
    assert sections.count() == 1
    section = sections.first
    heatmap = section.locator(".heatmap")
    switch_to_jacobian(page, section)
    trace = page.evaluate("el => ({z: el.data[0].z, text: el.data[0].text})",
                          heatmap.element_handle())
    z, text = trace["z"], trace["text"]
    length = len(document["input_ids"])
    assert len(z) == len(document["layers"]) and len(z[0]) == length
    assert z[0] == [None] * length and text[0] == [""] * length
    for layer in range(1, len(z)):
        assert z[layer] == pytest.approx(document["entropy"][layer], abs=1e-3)
        assert all(text[layer])
    # Hover: nothing but "no reading" on row 0; the numbers on row 1.
    gap = hover_text(page, heatmap, 0, 2)
    assert GAP in gap and not NUMBERS.search(gap.replace("layer 0 · position 2", "")), gap
    covered = hover_text(page, heatmap, 1, 2)
    assert "entropy" in covered and "%" in covered and GAP not in covered
    # Another metric: still blank at row 0, the document's numbers elsewhere.
    section.locator(".metric-select").select_option("top1")
    page.wait_for_function("el => el.data[0].colorscale === 'Blues'", arg=heatmap.element_handle(),
                           timeout=10_000)
    z = page.evaluate("el => el.data[0].z", heatmap.element_handle())
    assert z[0] == [None] * length
    assert z[1] == pytest.approx([cell[0] for cell in document["topk_probs"][1]], abs=1e-4)
    # A click on row 0 lists nothing to follow; on row 1 the top-k.
    picker = section.locator(".token-picker").element_handle()
    pick_cell(page, heatmap, 0, length - 1, picker,
              f"el => el.textContent.includes({json.dumps(GAP)})")
    assert section.locator(".token-picker button").count() == 0
    pick_cell(page, heatmap, 1, length - 1, picker, "el => el.querySelector('button') !== null")
    assert section.locator(".token-picker button").count() == len(document["topk_ids"][1][0])
    # The target's trajectory: a gap at row 0, the document's numbers elsewhere.
    trajectory = page.evaluate("el => el.data.map(t => ({y: t.y, gaps: t.connectgaps}))",
                               section.locator(".trajectory").element_handle())
    assert len(trajectory) == 1 and trajectory[0]["gaps"] is False
    target = [row[-1] if row else None for row in document["target_prob"]]
    assert trajectory[0]["y"][0] is None
    assert trajectory[0]["y"][1:] == pytest.approx(target[1:], abs=1e-4)
    # Following a token: a gap at row 0 too.
    section.locator(".token-picker button").nth(1).click()
    page.wait_for_function("el => el.data.length === 2",
                           arg=section.locator(".trajectory").element_handle(), timeout=10_000)
    followed = page.evaluate("el => el.data[1].y", section.locator(".trajectory").element_handle())
    assert followed[0] is None and None not in followed[1:]
    # The depth comparison: a line per lens, the Jacobian lens's with a gap at depth 0.
    comparison = page.evaluate("() => document.querySelector('.comparison-chart').data"
                               ".map(t => ({name: t.name, y: t.y, gaps: t.connectgaps}))")
    assert len(comparison) == 2
    jacobian = [t for t in comparison if "(Jacobian lens)" in t["name"]]
    logit = [t for t in comparison if "(logit lens)" in t["name"]]
    assert len(jacobian) == 1 and len(logit) == 1
    assert jacobian[0]["y"][0] is None and jacobian[0]["gaps"] is False
    assert None not in jacobian[0]["y"][1:] and None not in logit[0]["y"]
    answer = document["topk_ids"][-1][-1][0]
    column = document["tracked_ids"][-1].index(answer)
    assert jacobian[0]["y"][1] == pytest.approx(
        document["tracked_probs"][-1][1][column], abs=1e-4)
    assert page.errors == []


@pytest.mark.browser
def test_the_embed_page_switches_to_the_jacobian_lens(jacobian_site, page):
    """Over HTTP: an embed inlines its first view and fetches its lenses' documents."""
    site, _, document, _ = jacobian_site
    with static_server(site) as base:
        open_page(page, base + "embed/tiny/fox.html")
        page.wait_for_function("() => !lensreport.figures[0].partial", timeout=30_000)
        sections = page.locator("section.figure")
        assert sections.count() == 1
        switch_to_jacobian(page, sections.first)
        z = page.evaluate("el => el.data[0].z",
                          sections.first.locator(".heatmap").element_handle())
    assert z[0] == [None] * len(document["input_ids"])
    assert z[-1] == pytest.approx(document["entropy"][-1], abs=1e-3)
    assert page.errors == []


@pytest.mark.browser
def test_the_corpus_page_draws_the_jacobian_curve_with_a_gap(jacobian_site, page):
    site, _, _, curves = jacobian_site
    for path in ("corpora/docs/index.html", "embed/corpora/docs.html"):
        open_page(page, (site / path).as_uri())
        charts = page.locator(".curve-panel .curve-chart")
        assert charts.count() == len(CORPUS_METRICS)
        traces = page.evaluate("""() => [...document.querySelectorAll('.curve-panel')].map(p => ({
            metric: p.getAttribute('data-metric'),
            traces: p.querySelector('.curve-chart').data.map(t => ({
                name: t.name, group: t.legendgroup, y: t.y, fill: t.fill || null,
                gaps: t.connectgaps}))}))""")
        assert len(traces) == len(CORPUS_METRICS)
        for panel in traces:
            metric = panel["metric"]
            mine = [t for t in panel["traces"] if t["group"] == "tiny (Jacobian lens)"]
            assert len(mine) == 3, metric  # the band's two edges and the line
            line = [t for t in mine if t["name"] == "tiny (Jacobian lens)"]
            assert len(line) == 1
            assert line[0]["y"][0] is None and line[0]["gaps"] is False
            assert line[0]["y"][1:] == pytest.approx(curves[metric][1:])
            assert curves[f"{metric}_ci"] is not None
            for edge in (t for t in mine if t is not line[0]):
                assert edge["y"][0] is None and None not in edge["y"][1:]
            logit = [t for t in panel["traces"] if t["name"] == "tiny (logit lens)"]
            assert len(logit) == 1 and None not in logit[0]["y"]
        assert page.errors == [], path


@pytest.mark.browser
def test_the_notebook_output_of_a_jacobian_run(jacobian_site, tmp_path, page, monkeypatch):
    site, folder, _, _ = jacobian_site
    model, tokenizer = (AutoModelForCausalLM.from_pretrained(folder),
                        AutoTokenizer.from_pretrained(folder))
    result = lensreport.run_lens(model, tokenizer, TEXT, target=" dog", lens="jacobian",
                                 jacobian=site.parent / "j.pt")
    assert result.covered.tolist() == [False] + [True] * (result.num_rows - 1)
    open_notebook_output(page, tmp_path, result, monkeypatch)
    heatmaps = page.locator(".lensreport-notebook .heatmap")
    assert heatmaps.count() == 1
    z = page.evaluate("el => el.data[0].z", heatmaps.first.element_handle())
    assert z[0] == [None] * len(result.tokens)
    assert z[1] == pytest.approx(result.entropy[1].tolist(), abs=1e-3)
    assert page.errors == []
