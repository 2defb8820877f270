"""The site at gallery scale: many models from saved results, an index that filters, sorts
and pages them in real Chromium, and every model reachable from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "benchmarks"))
from gallery_benchmark import write_gallery  # noqa: E402

MODELS = 60


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_models, weights_cache) -> Path:
    """60 models × 2 prompts of one tiny run, as the gallery benchmark writes them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lensreport
    from lensreport.results.documents import loads

    folder = tiny_models("llama")
    work = tmp_path_factory.mktemp("gallery")
    result = lensreport.run_lens(AutoModelForCausalLM.from_pretrained(folder),
                                 AutoTokenizer.from_pretrained(folder), "The quick brown fox")
    source = loads(result.save(work / "run.json").read_text())
    manifest = write_gallery(source, work / "g", MODELS, 2)
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
def test_a_prompt_page_of_many_models_draws_figures_as_they_scroll_into_view(gallery, page):
    """The first heatmap at once, the others when they come near the screen, in placeholders
    of their height (the page does not grow as they draw); the depth comparison has every
    model."""
    page.goto((gallery / "prompts" / "prompt-00" / "index.html").as_uri())
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
    drawn = "() => [...document.querySelectorAll('section.figure .heatmap')]" \
            ".filter(h => h.querySelector('.main-svg')).length"
    sections = page.locator("section.figure")
    assert sections.count() == MODELS
    first = page.evaluate(drawn)
    assert 1 <= first < MODELS // 2
    height = page.evaluate("() => document.documentElement.scrollHeight")
    last = sections.nth(MODELS - 1)
    assert last.get_attribute("data-lazy") is not None
    last.scroll_into_view_if_needed()
    page.wait_for_function("el => !el.hasAttribute('data-lazy') && "
                           "el.querySelector('.heatmap .main-svg') !== null",
                           arg=last.element_handle(), timeout=30_000)
    assert page.evaluate(drawn) < MODELS  # the ones in between, far off screen, wait
    assert abs(page.evaluate("() => document.documentElement.scrollHeight") - height) \
        < 0.02 * height
    names = page.evaluate("() => [...document.querySelectorAll('.comparison-chart')]"
                          ".flatMap(el => (el.data || []).map(t => t.name))")
    assert len({name.split(" ")[0] for name in names}) >= MODELS, names[:5]
    assert not page.errors, page.errors
