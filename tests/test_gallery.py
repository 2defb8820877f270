"""The site at gallery scale: many models from saved results, an index that filters, sorts
and pages them in real Chromium, and every model reachable from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import open_notebook_output, run_cli, static_server
from gallery_benchmark import FAMILIES, write_gallery  # benchmarks/ (on the path: conftest)
from lensreport.api import LensResult
from lensreport.site.pages import GALLERY_SIZE

MODELS = 60


OLD_FAMILIES = FAMILIES[::2]  # their documents as schema 1 (0.2's lists), the others schema 3


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_models, weights_cache) -> Path:
    """60 models × 2 prompts of one tiny run, as the gallery benchmark writes them; half the
    families' documents in the old form (schema 1: ``tracked_probs`` as lists)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lensreport
    from lensreport.results.documents import loads

    folder = tiny_models("llama")
    work = tmp_path_factory.mktemp("gallery")
    result = lensreport.run_lens(AutoModelForCausalLM.from_pretrained(folder),
                                 AutoTokenizer.from_pretrained(folder), "The quick brown fox")
    saved = result.save(work / "run.json").read_text()
    assert json.loads(saved)["schema_version"] == 3
    manifest = write_gallery(json.loads(saved), work / "g", MODELS, 2)
    for family in OLD_FAMILIES:
        for path in (work / "g" / "results").glob(f"{family}-*.json"):
            old = {**loads(path.read_text()), "schema_version": 1}
            assert isinstance(old["tracked_probs"], list)
            path.write_text(json.dumps(old))
    built = run_cli("build", manifest, "--site-dir", work / "site")
    assert built.returncode == 0, built.stderr
    return work / "site"


@pytest.mark.browser
def test_index_filters_sorts_and_pages_models(gallery, page):
    page.goto((gallery / "index.html").as_uri())
    rows = page.locator("#gallery-table tbody tr")
    assert rows.count() == MODELS
    visible = page.locator("#gallery-table tbody tr:not([hidden])")
    assert visible.count() == 50
    assert page.locator(".gallery-count").inner_text() == f"{MODELS} models"
    # Every model is reachable: a link to each model page is in the table (paged or not).
    links = page.eval_on_selector_all("#gallery-table tbody th a",
                                      "els => els.map(a => a.getAttribute('href'))")
    assert len(set(links)) == MODELS
    assert all((gallery / link).is_file() for link in links)
    # Next page shows the last 10.
    page.click(".gallery-pages [data-page='1']")
    assert visible.count() == MODELS - 50
    assert "51–60 of 60" in page.locator(".gallery-pages span").inner_text()
    # Filtering by a word of the name (family) keeps just those.
    page.fill(".gallery-filter", "gemma")
    names = page.eval_on_selector_all("#gallery-table tbody tr:not([hidden]) th a",
                                      "els => els.map(a => a.textContent)")
    assert names and all("gemma" in name for name in names) and len(names) == MODELS // 6
    assert page.locator(".gallery-count").inner_text() == f"{len(names)} of {MODELS} models"
    # Sorting by name, descending on the second click.
    page.fill(".gallery-filter", "")
    header = page.locator("#gallery-table th[data-sort] button", has_text="Model")
    header.click()
    header.click()
    assert page.locator("#gallery-table th", has_text="Model").get_attribute("aria-sort") == \
        "descending"
    first = page.eval_on_selector_all("#gallery-table tbody tr:not([hidden]) th a",
                                      "els => els.map(a => a.textContent)")
    assert first == sorted(first, reverse=True) and len(first) == 50
    assert not page.errors, page.errors


@pytest.mark.browser
def test_a_long_header_list_is_filled_from_the_search_index_when_opened(gallery, page):
    """More than NAV_SIZE models: no page carries the list (it would grow with models ×
    pages); opening "Models" lists every model, in order, as links that resolve, ahead of
    the link to the index. A short list (2 prompts) is written out as before."""
    model_page = gallery / "models" / f"{FAMILIES[0]}-001-000" / "index.html"
    html = model_page.read_text(encoding="utf-8")
    assert html.count('href="../../models/') < 5  # its own embed and data links aside
    page.goto(model_page.as_uri())
    models = page.locator("details[data-nav=model]")
    assert models.locator("li").count() == 1
    models.locator("summary").click()
    links = models.locator("li a")
    expect(links).to_have_count(MODELS + 1)  # the toggle event comes a task after the click
    hrefs = links.evaluate_all("els => els.map(a => a.href)")
    names = links.evaluate_all("els => els.map(a => a.textContent)")
    assert names[-1] == f"All {MODELS} models" and hrefs[-1].endswith("/index.html")
    index = (gallery / "index.html").read_text(encoding="utf-8")
    expected = re.findall(r'<th scope="row" data-value="([^"]+)"', index)  # manifest order
    assert names[:-1] == expected and len(set(expected)) == MODELS
    for href in hrefs[:-1]:
        assert Path(href.removeprefix("file://")).is_file(), href
    assert links.nth(0).is_visible()
    models.locator("summary").click()  # closed and opened again: not filled twice
    page.evaluate("""() => { const details = document.querySelector('details[data-nav=model]');
        window.reopened = new Promise(done => details.addEventListener(
            'toggle', () => { if (details.open) done(); })); }""")
    models.locator("summary").click()
    page.evaluate("() => window.reopened")  # after search.js's own toggle listener ran
    assert links.count() == MODELS + 1
    prompts = page.locator(".site-header details", has_text="Prompts")
    assert prompts.get_attribute("data-nav") is None
    assert prompts.locator("li a").count() == 2
    assert not page.errors, page.errors


DRAWN = ("() => [...document.querySelectorAll('section.figure .heatmap')]"
         ".filter(h => h.querySelector('.main-svg')).length")
IS_DRAWN = "el => !el.hasAttribute('data-lazy') && el.querySelector('.heatmap .main-svg') !== null"
IS_RELEASED = ("el => el.hasAttribute('data-lazy') && "
               "el.querySelector('.heatmap .main-svg') === null")
SHOWN = "section.figure:not([hidden])"


def open_prompt_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)


@pytest.mark.browser
def test_a_prompt_page_of_many_models_draws_figures_as_they_scroll_into_view(gallery, page):
    """The first GALLERY_SIZE models are shown; the first heatmap is drawn at once, the
    others when they come near the screen, in placeholders of their height (the page does
    not grow as they draw), and one far off screen gives its plot back and draws again when
    it returns; the depth comparison has every model."""
    open_prompt_page(page, (gallery / "prompts" / "prompt-00" / "index.html").as_uri())
    sections = page.locator("section.figure")
    assert sections.count() == MODELS
    shown = page.locator(SHOWN)
    assert shown.count() == GALLERY_SIZE
    assert page.locator(".picker-count").inner_text() == f"{GALLERY_SIZE} of {MODELS} models shown"
    first = page.evaluate(DRAWN)
    assert 1 <= first < GALLERY_SIZE
    height = page.evaluate("() => document.documentElement.scrollHeight")
    last = shown.nth(GALLERY_SIZE - 1)
    assert last.get_attribute("data-lazy") is not None
    last.scroll_into_view_if_needed()
    page.wait_for_function(IS_DRAWN, arg=last.element_handle(), timeout=30_000)
    assert page.evaluate(DRAWN) < GALLERY_SIZE  # the ones in between, far off screen, wait
    assert abs(page.evaluate("() => document.documentElement.scrollHeight") - height) \
        < 0.02 * height
    # With every model shown, the first figure, thousands of pixels above the last, gives
    # its plot back when the last is on screen, and draws again when scrolled back to.
    page.click("[data-pick=matching]")
    assert shown.count() == MODELS
    last = shown.nth(MODELS - 1)
    last.scroll_into_view_if_needed()
    page.wait_for_function(IS_DRAWN, arg=last.element_handle(), timeout=30_000)
    top = shown.nth(0).element_handle()
    page.wait_for_function(IS_RELEASED, arg=top, timeout=30_000)
    shown.nth(0).scroll_into_view_if_needed()
    page.wait_for_function(IS_DRAWN, arg=top, timeout=30_000)
    names = page.evaluate("() => [...document.querySelectorAll('.comparison-chart')]"
                          ".flatMap(el => (el.data || []).map(t => t.name))")
    assert len({name.split(":")[0] for name in names}) == MODELS, names[:5]
    assert not page.errors, page.errors


@pytest.mark.browser
def test_the_model_picker_filters_by_family_and_shows_any_model(gallery, page):
    """Every model is reachable from the prompt page: the picker groups models by family,
    filters them by a word, shows the matching ones (drawn when scrolled to) or hides all,
    and a link to a figure that is not shown (the index's cells) shows it."""
    url = (gallery / "prompts" / "prompt-00" / "index.html").as_uri()
    open_prompt_page(page, url)
    legends = page.eval_on_selector_all(".picker-family legend",
                                        "els => els.map(e => e.textContent)")
    assert sorted(legend.split(" ")[0] for legend in legends) == sorted(FAMILIES)
    assert page.locator(".model-picker input[type=checkbox]").count() == MODELS
    gemma_shown = page.locator(".model-picker label[data-search*=gemma] input:checked").count()
    assert page.locator(".picker-list").get_attribute("open") is None  # closed at first
    page.fill(".picker-filter", "gemma")
    assert page.locator(".picker-list").get_attribute("open") is not None
    visible = page.eval_on_selector_all(".model-picker label:not([hidden])",
                                        "els => els.map(e => e.textContent.trim())")
    assert len(visible) == MODELS // len(FAMILIES) and all("gemma" in v for v in visible)
    assert page.locator(".picker-family:not([hidden])").count() == 1
    page.click("[data-pick=matching]")
    assert page.locator(SHOWN).count() == GALLERY_SIZE + len(visible) - gemma_shown
    last_gemma = page.locator(f"{SHOWN}[data-model='{visible[-1]}']")
    last_gemma.scroll_into_view_if_needed()
    page.wait_for_function(IS_DRAWN, arg=last_gemma.element_handle(), timeout=30_000)
    page.click("[data-pick=none]")
    assert page.locator(SHOWN).count() == 0
    assert page.locator(".picker-count").inner_text() == f"0 of {MODELS} models shown"
    # Ticking one model shows its figure, drawn at once (it is the only one on screen).
    page.locator(".model-picker label", has_text=visible[3]).click()
    one = page.locator(f"{SHOWN}[data-model='{visible[3]}']")
    assert page.locator(SHOWN).count() == 1 and one.count() == 1
    page.wait_for_function(IS_DRAWN, arg=one.element_handle(), timeout=30_000)
    assert page.locator(".picker-count").inner_text() == f"1 of {MODELS} models shown"
    # The index links each cell to its figure: one not shown at first is shown and drawn.
    hidden_id = page.locator("section.figure").nth(MODELS - 1).get_attribute("id")
    page.goto("about:blank")
    open_prompt_page(page, f"{url}#{hidden_id}")
    target = page.locator(f"#{hidden_id}")
    assert target.is_visible()
    page.wait_for_function(IS_DRAWN, arg=target.element_handle(), timeout=30_000)
    assert page.locator(SHOWN).count() == GALLERY_SIZE + 1
    assert not page.errors, page.errors


@pytest.mark.browser
def test_gallery_pages_inline_first_views_and_fetch_the_documents(gallery, page):
    """At gallery scale each run's numbers are once in the site (data/); pages inline the
    first view. Over HTTP a drawn figure fetches its document (every metric, trajectories);
    from file:// it says what is missing and why."""
    prompt_page = (gallery / "prompts" / "prompt-00" / "index.html").read_text()
    assert "tracked_probs" not in prompt_page and '"partial":true' in prompt_page
    embed = (gallery / "embed").rglob("*.html")
    assert all("tracked_probs" not in path.read_text() for path in embed)
    with static_server(gallery) as base:
        for path in ("prompts/prompt-00/index.html", "embed/llama-001-000/prompt-00.html",
                     "models/gemma-001-001/index.html"):
            open_prompt_page(page, base + path)
            page.wait_for_function("() => !lensreport.figures[0].partial", timeout=30_000)
            options = page.eval_on_selector(".metric-select",
                                            "el => [...el.options].map(o => o.value)")
            assert {"entropy", "kl", "next"} <= set(options), options
            assert page.evaluate("() => lensreport.figures[0].d.tracked_probs.length") > 0
            if not path.startswith("embed/"):  # embeds have no trajectory panel
                page.wait_for_selector(".trajectory .main-svg", timeout=30_000)
    embed_page = gallery / "embed/llama-001-000/prompt-00.html"
    open_prompt_page(page, embed_page.as_uri())
    # What the browser reads as its default is not inlined: one row per block, no marks.
    inline = json.loads(re.search(r'class="figure-data">(.*?)</script>',
                                  embed_page.read_text(), re.S).group(1))["documents"][0]
    assert not {"row_depths", "generated_from", "template_mask"} & set(inline)
    assert page.evaluate("() => lensreport.figures[0].d.depths") == \
        list(range(len(inline["layers"])))
    note = page.locator(".figure-note").first
    assert "file://" in note.inner_text() and "lensreport serve" in note.inner_text()
    assert not page.errors, page.errors


@pytest.mark.browser
def test_old_and_new_documents_show_in_a_notebook(gallery, page, tmp_path, monkeypatch):
    """LensResult.load reads a schema-1 and a schema-3 document alike, and the notebook
    output (which inlines the whole document: it cannot fetch) draws the same numbers."""
    results = gallery.parent / "g" / "results"
    old, new = (LensResult.load(results / f"{name}.00.json")
                for name in ("llama-001-000", "gemma-001-001"))
    assert old.document["tracked_probs"] == new.document["tracked_probs"]
    for result in (old, new):
        open_notebook_output(page, tmp_path, result, monkeypatch)
        page.wait_for_selector(".lensreport-notebook .trajectory .main-svg", timeout=30_000)
        drawn = page.evaluate("() => lensreport.figures[0].d.tracked_probs")
        assert drawn == [[v for row in rows for v in row]
                         for rows in result.document["tracked_probs"]]
        assert not page.errors, page.errors


@pytest.mark.browser
def test_a_metric_switched_before_a_figure_is_drawn_and_a_broken_hash(gallery, page):
    """A figure that waits to be seen takes a colour metric switched before it is drawn (no
    error; drawn in that metric), and a URL hash with a broken percent escape is no
    figure's (picker.js), not an error."""
    url = (gallery / "prompts" / "prompt-00" / "index.html").as_uri()
    open_prompt_page(page, url + "#%E0%A4%A")
    assert page.locator(SHOWN).count() == GALLERY_SIZE
    assert not page.errors, page.errors
    last = page.locator(SHOWN).nth(GALLERY_SIZE - 1)
    assert last.get_attribute("data-lazy") is not None
    # A first view offers what it draws (entropy; the rest comes with the document).
    assert last.locator(".metric-select option").all_inner_texts() == ["Entropy (nats)"]
    last.locator(".metric-select").evaluate(
        "el => { el.value = 'entropy'; el.dispatchEvent(new Event('change')); }")
    assert not page.errors, page.errors
    last.scroll_into_view_if_needed()
    page.wait_for_function(IS_DRAWN, arg=last.element_handle(), timeout=30_000)
    assert last.locator(".heatmap .cbtitle").text_content() == "Entropy (nats)"
    assert not page.errors, page.errors
