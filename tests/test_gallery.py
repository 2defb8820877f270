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
