"""The demo site on both packaged real models: results, links, and real Chromium."""

from __future__ import annotations

import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import static_server
from lensreport.results.documents import loads

pytestmark = pytest.mark.slow

MODELS = ("smollm2-135m", "gemma-3-270m")


def test_lens_on_real_models_predicts_dog(demo_site):
    for model in MODELS:
        document = loads((demo_site / "data" / model / "fox.json").read_text())
        last = document["layers"][-1]
        top1 = document["topk_ids"][last][-1][0]
        assert document["vocab"][str(top1)] == " dog", model
        assert document["prompt"]["target_token"] == " dog"
        assert document["target_rank"][last][-1] == 1
        assert document["kl_to_final"][last][-1] == 0.0
        assert document["model"]["head_check_max_abs_diff"] <= 1e-3


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append((tag, name, value))


def test_every_internal_link_resolves_and_nothing_is_external(demo_site):
    pages = list(demo_site.rglob("*.html"))
    assert len(pages) >= 1 + 5 + 2 + 10
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, _, value in parser.links:
            url = urlparse(value)
            if tag in ("script", "link"):
                assert not url.scheme and not value.startswith("//"), (page, value)
            if url.scheme or value.startswith("#"):
                continue
            # 404.html links root-relative (it is served at any depth) without site_url.
            target = (demo_site / url.path.lstrip("/") if url.path.startswith("/")
                      else page.parent / url.path).resolve()
            assert target.is_file(), f"{page}: broken link {value}"
    assert (demo_site / ".nojekyll").is_file()
    assert (demo_site / "assets" / "plotly.min.js").stat().st_size > 1_000_000


@pytest.fixture(scope="module")
def http_site(demo_site):
    with static_server(demo_site) as url:
        yield url


def open_page(page, url):
    page.goto(url)
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)


@pytest.mark.browser
@pytest.mark.parametrize("origin", ["file", "http"])
def test_pages_render_without_errors(page, demo_site, http_site, origin):
    base = demo_site.as_uri() + "/" if origin == "file" else http_site
    for path in ("index.html", "prompts/fox/index.html", "models/gemma-3-270m/index.html",
                 "embed/smollm2-135m/fox.html"):
        page.goto(base + path)
        if path != "index.html":
            page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
            expected = page.locator("section.figure").count()
            assert page.locator(".heatmap .main-svg").count() >= expected > 0, path
        assert page.errors == [], (path, page.errors)


@pytest.mark.browser
def test_fox_heatmaps_show_dog_on_the_last_layer(page, demo_site):
    open_page(page, demo_site.as_uri() + "/prompts/fox/index.html")
    for model in MODELS:
        texts = page.evaluate("""id => {
            const el = document.querySelector(`section[id="${id}"] .heatmap`);
            const rows = el.data[0].text; return rows[rows.length - 1];
        }""", f"fig-{model}--fox")
        assert texts[-1] == " dog", model
        rendered = page.locator(f'section[id="fig-{model}--fox"] .heatmap g.heatmap-label text')
        assert rendered.count() > 0, model  # cell text is drawn (not only in the data)
        assert " dog" in [t.replace("\u00a0", " ") for t in rendered.all_text_contents()]


@pytest.mark.browser
def test_switching_the_metric_changes_the_colours(page, demo_site):
    """An embed inlines its first view and fetches the rest (over HTTP): then every metric."""
    with static_server(demo_site) as base:
        open_page(page, base + "embed/gemma-3-270m/fox.html")
        page.wait_for_function("() => [...document.querySelectorAll('.metric-select option')]"
                               ".some(o => o.textContent.startsWith('P(target'))", timeout=30_000)
        switch_metric(page)


def switch_metric(page) -> None:
    heatmap = page.locator(".heatmap")
    before = heatmap.screenshot()
    z_before = page.evaluate("() => document.querySelector('.heatmap').data[0].z")
    options = page.locator(".metric-select option").all_inner_texts()
    assert {"Entropy (nats)", "Top-1 probability", "P(actual next token)"} <= set(options)
    assert any(o.startswith("P(target") for o in options)
    page.select_option(".metric-select", "top1")
    page.wait_for_function("before => JSON.stringify(document.querySelector('.heatmap')"
                           ".data[0].z) !== before", arg=json.dumps(z_before), timeout=10_000)
    assert heatmap.screenshot() != before


@pytest.mark.browser
def test_clicking_a_cell_lists_tokens_to_follow(page, demo_site):
    open_page(page, demo_site.as_uri() + "/prompts/fox/index.html")
    section = page.locator('section[id="fig-smollm2-135m--fox"]')
    assert section.locator(".trajectory .main-svg").count() >= 1  # the target, by default
    heatmap = section.locator(".heatmap")
    heatmap.scroll_into_view_if_needed()
    # Where the last row's last cell is drawn (Plotly's axis mapping; y is the row's depth),
    # then a real click.
    x, y = page.evaluate("""el => {
        const layout = el._fullLayout, data = el.data[0];
        const last = data.x.length - 1, top = data.y[data.y.length - 1];
        return [layout.xaxis._offset + layout.xaxis.l2p(last),
                layout.yaxis._offset + layout.yaxis.l2p(top)];
    }""", heatmap.element_handle())
    box = heatmap.bounding_box()
    # A little left of and below the cell's centre: the mode bar floats over the top right.
    page.mouse.click(box["x"] + x - 10, box["y"] + y + 8)
    buttons = section.locator(".token-picker button")
    buttons.first.wait_for(timeout=10_000)
    assert buttons.count() == 5
    assert buttons.first.inner_text() == " dog"  # the last layer's top-1 at the last position
    assert "Layer 30, position 7" in section.locator(".token-picker .hint").inner_text()
    buttons.nth(1).click()
    page.wait_for_function("el => el.data.length === 2",
                           arg=section.locator(".trajectory").element_handle(), timeout=10_000)
    assert page.errors == []


@pytest.mark.browser
def test_embed_page_renders_alone_in_an_iframe(page, demo_site, tmp_path):
    host = tmp_path / "post.html"
    embed = (demo_site / "embed" / "smollm2-135m" / "fox.html").as_uri()
    host.write_text(f'<!doctype html><h1>My post</h1><iframe src="{embed}" width="900" '
                    f'height="800"></iframe>')
    page.goto(host.as_uri())
    frame = page.frame_locator("iframe")
    frame.locator("html[data-figures-ready]").wait_for(timeout=30_000)
    assert frame.locator(".heatmap .main-svg").count() >= 1
    assert frame.locator("header.site-header").count() == 0
    assert page.errors == []


@pytest.mark.browser
def test_dark_mode_follows_the_system(browser, demo_site):
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    open_page(page, demo_site.as_uri() + "/embed/smollm2-135m/fox.html")
    background = page.evaluate("() => document.querySelector('.heatmap').layout.paper_bgcolor")
    assert re.match(r"#1|rgb\(2", background), background
    context.close()


def test_readme_images_are_real_screenshots():
    """Every image the README shows resolves, next to it, to a PNG of screenshot size."""
    readme = Path(__file__).parent.parent / "README.md"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8"))
    assert "docs/prompt-page.png" in images, images
    for image in images:
        assert not urlparse(image).scheme, image  # shipped with the docs, not hot-linked
        path = readme.parent / image
        assert path.is_file(), f"README shows {image}, which does not exist"
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", image
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 800 and height >= 300, (image, width, height)
        assert 20_000 <= len(data) <= 5_000_000, (image, len(data))


@pytest.mark.browser
def test_download_csv_is_written_by_the_browser(page, demo_site):
    """Without site.csv_files the CSV is no file: a click writes it from the document,
    byte for byte what run_csv writes (numbers as Python prints them), for each lens."""
    from lensreport.site.tables import run_csv

    assert not list(demo_site.glob("data/*/*.csv"))
    open_page(page, demo_site.as_uri() + "/prompts/fox/index.html")
    links = page.locator('section[id="fig-smollm2-135m--fox"] a[data-csv]:not([data-csv-of])')
    assert links.count() == 3  # logit, tuned and patchscope
    for index, stem in enumerate(("fox", "fox.tuned", "fox.patchscope")):
        with page.expect_download() as download:
            links.nth(index).click()
        assert download.value.suggested_filename == f"{stem}.csv"
        written = Path(download.value.path()).read_bytes().decode("utf-8")
        expected = run_csv(loads((demo_site / f"data/smollm2-135m/{stem}.json").read_text()))
        assert written == expected and written.count("\r\n") > 31 * 8
