"""Publishing: static figures (kaleido in the system's Chromium), CSV, search, sitemap,
robots.txt, 404, Open Graph and Twitter meta, the theme switch, and the strict link check.

One tiny site with ``site_url`` and every export format is built once (module fixture) and
read by most tests; the browser tests drive it from file:// and over HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import REPO, copy_project, run_cli, static_server, write_manifest
from lensreport.results.documents import loads
from lensreport.site import export
from lensreport.site.links import broken_links
from lensreport.site.tables import RUN_COLUMNS, run_csv

SITE_URL = "https://user.github.io/repo/"
SVG = "{http://www.w3.org/2000/svg}"
BASE = REPO / "lensreport" / "site" / "templates"


def manifest_body(model: Path, export_formats: str = "[svg, png, pdf]") -> str:
    return f"""
        site:
          title: Published <report>
          site_url: {SITE_URL}
          export: {export_formats}
          csv_files: true
          note: Site notes mention zeppelins.
        models:
          - name: tiny
            model: {model}
            lens: {{kinds: [logit, raw]}}
        prompts:
          - name: fox
            text: "The quick brown fox jumps over the lazy"
            target: " the"  # one token for the tiny tokenizer: the build has no warning
          - name: code & <tags>
            text: "a = b <= c && d"
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 40, context: 16}}
    """


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_models, weights_cache) -> Path:
    folder = tmp_path_factory.mktemp("published")
    (folder / "corpus.txt").write_text("The quick brown fox.\n\nAnother document.\n\nA third.\n")
    manifest = write_manifest(folder, manifest_body(tiny_models("llama", "sentencepiece")))
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert re.search(r"static figures: 15 file\(s\), 15 rendered, 0 from the cache",
                     result.stderr), result.stderr
    return folder


@pytest.fixture(scope="module")
def site(project) -> Path:
    return project / "site"


def document(site: Path, stem: str = "fox") -> dict:
    return loads((site / "data" / "tiny" / f"{stem}.json").read_text())


def pages(site: Path) -> list[str]:
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))


# --- Static figures -------------------------------------------------------------------------


def test_every_heatmap_and_corpus_is_exported_in_every_format(site):
    for stem in ("tiny/fox", "tiny/fox.raw", "tiny/code-tags", "tiny/code-tags.raw",
                 "corpora/docs"):
        for fmt in ("svg", "png", "pdf"):
            assert (site / "figures" / f"{stem}.{fmt}").stat().st_size > 1000, (stem, fmt)
    assert (site / "figures/tiny/fox.pdf").read_bytes().startswith(b"%PDF-")
    assert b"/CreationDate (D:19700101000000+00'00')" in (site / "figures/tiny/fox.pdf"
                                                          ).read_bytes()


def test_png_is_print_sized(site):
    for stem in ("tiny/fox", "tiny/code-tags.raw", "corpora/docs"):
        data = (site / "figures" / f"{stem}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 1200 and height >= 500, (stem, width, height)  # 2x of >= 600 px


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()).replace("\u00a0", " ") for t in root.iter(f"{SVG}text")]


def test_svg_has_the_cells_token_text_as_text(site):
    for stem, kind in (("fox", "logit"), ("code-tags", "logit"), ("code-tags.raw", "raw")):
        doc = document(site, stem)
        texts = svg_texts(site / "figures" / "tiny" / f"{stem}.svg")
        top1 = [doc["vocab"][str(cell[0])] for row in doc["topk_ids"] for cell in row]
        shown = [t if len(t) <= 10 else t[:9] + "…" for t in top1]
        assert set(shown) <= set(texts), set(shown) - set(texts)  # every cell's top-1 token
        title = f"tiny · {doc['prompt']['name']} · {kind} lens"
        assert title in texts, texts[:5]  # '&' and '<' arrive as text, not markup
    assert "Cross-entropy (nats/token)" in svg_texts(site / "figures/corpora/docs.svg")


def test_renders_are_deterministic_across_browser_sessions(site):
    """A fresh browser renders the fixture's figure to the same bytes (SVG ids seeded, PDF
    dates fixed)."""
    from lensreport.site.static_figures import heatmap_parts, lens_title

    figure = heatmap_parts(document(site), lens_title("tiny", "fox", "logit"))[0]
    digest = export.figure_digest(figure)
    svg, pdf = export.render([export.ExportJob("x.svg", figure, "svg", digest),
                              export.ExportJob("x.pdf", figure, "pdf", digest)])
    assert svg == (site / "figures/tiny/fox.svg").read_bytes()
    assert export._stamp(pdf, "pdf") == (site / "figures/tiny/fox.pdf").read_bytes()


def test_long_prompts_split_into_panels_and_parts():
    from lensreport.site.static_figures import PANEL_TOKENS, heatmap_parts, token_spans

    assert token_spans(10) == [[(0, 10)]]
    assert token_spans(50) == [[(0, 25), (25, 50)]]  # balanced, not 40 + 10
    spans = token_spans(1000)
    assert len(spans) > 1 and all(len(part) <= 4 for part in spans)
    flat = [span for part in spans for span in part]
    assert flat[0][0] == 0 and flat[-1][1] == 1000 and all(
        a[1] == b[0] and b[1] - b[0] <= PANEL_TOKENS for a, b in zip(flat, flat[1:]))
    doc = {"layers": [0, 1], "input_ids": list(range(90)), "vocab": {},
           "entropy": [[1.0] * 90, None], "topk_ids": [[[i] for i in range(90)], None]}
    (part,) = heatmap_parts(doc, "a <b> title")
    assert [t["x"][0] for t in part["data"]] == [0, 30, 60]
    assert part["data"][0]["text"][1] == [""] * 30 and part["data"][0]["z"][1] == [None] * 30
    assert part["data"][0]["text"][0][0] == "#0" and part["layout"]["title"]["text"] == \
        "a &lt;b&gt; title"


def test_a_template_only_rebuild_renders_no_figure(tmp_path, project):
    folder = copy_project(project, tmp_path / "copy")
    before = {p: (folder / "site" / p).read_bytes() for p in ("figures/tiny/fox.png",
                                                               "figures/tiny/fox.svg")}
    theme = folder / "theme"
    theme.mkdir()
    (theme / "index.html").write_text((BASE / "index.html").read_text().replace(
        "{% block content %}", "{% block content %}<p>THEMED</p>"))
    manifest = folder / "prompts.yaml"
    manifest.write_text(manifest.read_text().replace("  export:", "  theme_dir: theme\n  export:"))
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert "static figures: 15 file(s), 0 rendered, 15 from the cache" in result.stderr
    assert "THEMED" in (folder / "site/index.html").read_text()
    assert {p: (folder / "site" / p).read_bytes() for p in before} == before


def test_no_browser_is_one_clear_line_and_keeps_the_site(tmp_path, built_tiny, monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    manifest = built_tiny(tmp_path, extra="  export: [png]\n")
    before = (tmp_path / "site/index.html").read_bytes()
    empty = tmp_path / "no-browser"
    empty.mkdir()
    result = run_cli("build", manifest, env={"PATH": str(empty)})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "apt-get install chromium" in lines[0] and "site.export: []" in lines[0]
    assert (tmp_path / "site/index.html").read_bytes() == before
    result = run_cli("build", manifest, env={"BROWSER_PATH": str(empty / "chrome")})
    assert result.returncode == 1 and "BROWSER_PATH=" in result.stderr


def test_export_setting_is_validated(tmp_path):
    manifest = write_manifest(tmp_path, """
        site:
          export: [png, gif]
          csv_files: "yes"
        models:
          - {name: a, model: org/a}
        prompts:
          - {name: p, text: x}
    """)
    result = run_cli("validate", manifest)
    assert result.returncode == 2
    assert f"{manifest}:2: site.export: expected a list of distinct static figure formats " \
           "from png, svg, pdf" in result.stderr
    assert f"{manifest}:3: site.csv_files: expected true or false" in result.stderr


# --- CSV ------------------------------------------------------------------------------------


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def test_csv_of_every_run_matches_its_json(site):
    for stem in ("fox", "fox.raw", "code-tags", "code-tags.raw"):
        doc = document(site, stem)
        rows = rows_of(site / "data" / "tiny" / f"{stem}.csv")
        layers, length = len(doc["layers"]), len(doc["input_ids"])
        assert len(rows) == layers * length
        assert list(rows[0]) == list(RUN_COLUMNS)
        for row in rows:
            layer, position = int(row["layer"]), int(row["position"])
            vocab = doc["vocab"]
            assert row["input_token"] == vocab[str(doc["input_ids"][position])]
            assert row["top1_token"] == vocab[str(doc["topk_ids"][layer][position][0])]
            assert float(row["top1_prob"]) == doc["topk_probs"][layer][position][0]
            assert float(row["entropy"]) == doc["entropy"][layer][position]
            assert float(row["kl_to_final"]) == doc["kl_to_final"][layer][position]
            nxt = doc["next_token_rank"][layer][position]
            assert row["next_token_rank"] == ("" if nxt is None else str(nxt))
            target = doc["target_prob"]
            assert row["target_prob"] == ("" if target is None
                                          else repr(target[layer][position]))


def test_csv_leaves_uncovered_rows_empty_and_adds_groups(site):
    doc = document(site)
    doc["lens"]["rows"] = [1, 2, 3]
    for field in ("topk_ids", "topk_probs", "entropy", "kl_to_final", "next_token_prob",
                  "next_token_rank", "target_prob", "target_rank"):
        doc[field][0] = None
    length = len(doc["input_ids"])
    grid = [None] + [[0.25] * length for _ in doc["layers"][1:]]
    doc["target_groups"] = [{"name": "=animals", "ids": [1, 2], "prob": grid,
                             "rank": [None] + [[3] * length for _ in doc["layers"][1:]],
                             "top_ids": grid, "top_probs": grid}]
    rows = list(csv.reader(io.StringIO(run_csv(doc), newline="")))
    assert rows[0][-2:] == ["group =animals prob", "group =animals rank"]
    first, later = rows[1], rows[1 + length]
    assert first[:3] == ["0", "0", doc["vocab"][str(doc["input_ids"][0])]]
    assert first[3:] == [""] * (len(rows[0]) - 3)
    assert later[-2:] == ["0.25", "3"]


FORMULAS = ['=HYPERLINK("http://evil.example/","click")', "+1+2", "-3", "@SUM(A1)", "\tx",
            "\r=1"]


def test_csv_neutralises_text_a_spreadsheet_would_evaluate(site):
    """A token is as long as its tokenizer makes it: a text cell starting with =, +, -, @,
    a tab or a carriage return gets a leading quote (shown visibly: ⇥, ␍); numbers and other
    text stay as they are; the JSON keeps the token exactly."""
    doc = document(site)
    ids = doc["input_ids"][:len(FORMULAS)]
    doc["vocab"].update({str(i): text for i, text in zip(ids, FORMULAS)})
    rows = list(csv.reader(io.StringIO(run_csv(doc), newline="")))
    shown = ["'" + FORMULAS[0], "'+1+2", "'-3", "'@SUM(A1)", "⇥x", "␍=1"]
    assert [row[2] for row in rows[1:len(ids) + 1]] == shown[:len(ids)]
    assert rows[1][4] == repr(doc["topk_probs"][0][0][0])  # a number, unquoted


def test_corpus_csv_has_a_row_per_layer_and_metric(site):
    curves = json.loads((site / "data/corpora/docs/tiny.json").read_text())
    rows = rows_of(site / "data/corpora/docs/tiny.csv")
    assert list(rows[0]) == ["row", "metric", "mean", "low", "high"]
    assert len(rows) == len(curves["layers"]) * 6
    for row in rows:
        value = curves[row["metric"]][int(row["row"])]
        assert row["mean"] == ("" if value is None else repr(value))
    assert (site / "data/corpora/docs/tiny.raw.csv").is_file()


# --- Furniture ------------------------------------------------------------------------------


class _Meta(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta":
            self.meta[attrs.get("property") or attrs.get("name")] = attrs.get("content")
        elif tag == "link" and attrs.get("rel") == "canonical":
            self.meta["canonical"] = attrs["href"]
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def meta_of(path: Path) -> _Meta:
    parser = _Meta()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_page_has_a_title_description_and_absolute_preview_image(site):
    found = pages(site)
    assert len(found) == 9 and "404.html" in found
    for page in found:
        meta = meta_of(site / page)
        assert meta.meta["og:title"] == meta.title and meta.title, page
        assert meta.meta["description"] and meta.meta["twitter:card"] == "summary_large_image"
        image = meta.meta["og:image"]
        assert image.startswith(SITE_URL) and image.endswith(".png"), (page, image)
        assert (site / image[len(SITE_URL):]).is_file(), (page, image)
    assert meta_of(site / "prompts/fox/index.html").meta["og:image"] == \
        SITE_URL + "figures/tiny/fox.png"
    assert meta_of(site / "corpora/docs/index.html").meta["og:image"] == \
        SITE_URL + "figures/corpora/docs.png"
    assert meta_of(site / "index.html").meta["og:image"] == SITE_URL + "assets/social-card.png"
    assert meta_of(site / "prompts/code-tags/index.html").meta["canonical"] == \
        SITE_URL + "prompts/code-tags/"
    card = (site / "assets/social-card.png").read_bytes()
    assert struct.unpack(">II", card[16:24]) == (1200, 630)


def test_without_site_url_there_is_no_absolute_url(tmp_path, built_tiny):
    built_tiny(tmp_path)
    site = tmp_path / "site"
    meta = meta_of(site / "prompts/fox/index.html").meta
    assert meta["og:title"] and "og:image" not in meta and "canonical" not in meta
    assert not (site / "sitemap.xml").exists() and not (site / "robots.txt").exists()
    assert 'href="/index.html"' in (site / "404.html").read_text()  # root-relative


def test_sitemap_robots_and_404(site):
    root = ET.parse(site / "sitemap.xml").getroot()
    locs = [e.text for e in root.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    expected = [SITE_URL + re.sub(r"(^|/)index\.html$", r"\1", page)
                for page in pages(site) if page != "404.html"]
    assert sorted(locs) == sorted(expected) and len(locs) == len(set(locs)) == 8
    assert (site / "robots.txt").read_text() == \
        f"User-agent: *\nAllow: /\nSitemap: {SITE_URL}sitemap.xml\n"
    not_found = (site / "404.html").read_text()
    assert f'href="{SITE_URL}index.html"' in not_found  # works at any depth, any sub-path
    assert f'href="{SITE_URL}assets/style.css"' in not_found
    assert broken_links(site, SITE_URL) == []


def test_pages_link_their_downloads(site):
    page = (site / "prompts/fox/index.html").read_text()
    assert ('Download (logit): <a href="../../figures/tiny/fox.png" download>PNG</a> · '
            '<a href="../../figures/tiny/fox.svg" download>SVG</a> · '
            '<a href="../../figures/tiny/fox.pdf" download>PDF</a> · '
            '<a href="../../data/tiny/fox.csv" download>CSV</a> · '
            '<a href="../../data/tiny/fox.json" download>JSON</a>') in page
    assert 'href="../../figures/tiny/fox.raw.svg"' in page
    corpus = (site / "corpora/docs/index.html").read_text()
    assert 'href="../../figures/corpora/docs.svg" download>SVG</a>' in corpus
    assert 'href="../../data/corpora/docs/tiny.csv" download>CSV</a>' in corpus


def test_strict_fails_on_a_broken_link_and_keeps_the_site(tmp_path, project):
    folder = copy_project(project, tmp_path / "copy")
    theme = folder / "theme"
    theme.mkdir()
    manifest = folder / "prompts.yaml"
    manifest.write_text(manifest.read_text().replace("  export:", "  theme_dir: theme\n  export:"))
    before = (folder / "site/index.html").read_bytes()
    (theme / "index.html").write_text((BASE / "index.html").read_text().replace(
        "{% block content %}", '{% block content %}<a href="prompts/nowhere/index.html">x</a>'
        '<img src="../outside.png">'))
    (folder / "outside.png").write_bytes(b"")  # exists, but outside the site
    strict = run_cli("build", manifest, "--strict")
    assert strict.returncode == 1, strict.stderr
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --strict: 2 broken link(s) in the written pages: index.html -> "
                      "prompts/nowhere/index.html, index.html -> ../outside.png; the site was "
                      "not written"], strict.stderr
    assert (folder / "site/index.html").read_bytes() == before
    lenient = run_cli("build", manifest)
    assert lenient.returncode == 0 and "warning: 2 broken link(s)" in lenient.stderr
    assert b"nowhere" in (folder / "site/index.html").read_bytes()


# --- In Chromium ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_site(site):
    with static_server(site) as url:
        yield url


@pytest.mark.browser
@pytest.mark.parametrize("origin", ["file", "http"])
def test_search_finds_a_prompt_by_a_word_of_its_text(page, site, http_site, origin):
    base = site.as_uri() + "/" if origin == "file" else http_site
    results = page.locator("#search-results")
    for path in ("index.html", "corpora/docs/index.html"):
        page.goto(base + path)
        page.keyboard.press("/")  # focuses the search box
        assert page.evaluate("() => document.activeElement.classList.contains('search-input')")
        page.keyboard.type("laz")  # a word of the fox prompt's text, not of its name
        link = results.locator("a").first
        link.wait_for(timeout=10_000)
        assert link.evaluate("a => a.href") == base + "prompts/fox/index.html", path
        assert "fox" in link.inner_text()
    page.goto(base + "models/tiny/index.html")  # a third page, and a note
    page.fill(".search-input", "zeppelins")
    results.locator("a").first.wait_for(timeout=10_000)
    assert results.locator("a").first.evaluate("a => a.href") == base + "index.html"
    if origin == "http":
        return  # the keyboard once is enough
    page.fill(".search-input", "tags")  # a prompt by its name, then the keyboard
    results.locator("a").first.wait_for(timeout=10_000)
    page.keyboard.press("ArrowDown")
    assert results.locator('[aria-selected="true"]').count() == 1
    page.keyboard.press("Enter")
    page.wait_for_url(base + "prompts/code-tags/index.html", timeout=10_000)
    page.fill(".search-input", "no-such-word-anywhere")
    page.wait_for_function("() => document.querySelector('#search-results').textContent"
                           ".includes('Nothing found')", timeout=10_000)
    assert page.errors == []


@pytest.mark.browser
def test_the_404_page_works_at_any_depth_under_a_sub_path(page, site):
    """As GitHub Pages serves it: the site at SITE_URL (requests answered from the built
    folder), 404.html for any missing path, however deep."""
    def serve(route):
        path = route.request.url[len(SITE_URL):].split("?")[0]
        target = site / path / "index.html" if path.endswith("/") or not path else site / path
        if target.is_file():
            route.fulfill(path=target)
        else:
            route.fulfill(status=404, path=site / "404.html")

    page.route(SITE_URL + "**", serve)
    page.goto(SITE_URL + "no/such/page/here.html")
    assert page.locator("h1").inner_text() == "Page not found"
    assert page.evaluate("() => getComputedStyle(document.querySelector('.site-header'))"
                         ".borderBottomStyle") == "solid"  # its style sheet loaded
    page.fill(".search-input", "lazy")
    link = page.locator("#search-results a").first
    link.wait_for(timeout=10_000)
    assert link.get_attribute("href") == SITE_URL + "prompts/fox/index.html"
    link.click()
    page.wait_for_url(SITE_URL + "prompts/fox/index.html", timeout=10_000)
    assert [e for e in page.errors if "status of 404" not in e] == []  # but the page's own


@pytest.mark.browser
def test_theme_switch_recolours_page_and_figures_and_is_remembered(browser, http_site):
    context = browser.new_context(color_scheme="light", viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(http_site + "prompts/fox/index.html")
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
    paper = "() => document.querySelector('.heatmap').layout.paper_bgcolor"
    body = "() => getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(body) == "rgb(255, 255, 255)" and page.evaluate(paper) == "#ffffff"
    page.click('[data-theme-choice="dark"]')
    page.wait_for_function(f"({paper})() === '#14161a'", timeout=10_000)
    assert page.evaluate(body) == "rgb(20, 22, 26)"
    comparison = "() => document.querySelector('.comparison-chart').layout.paper_bgcolor"
    assert page.evaluate(comparison) == "#14161a"
    assert page.get_attribute('[data-theme-choice="dark"]', "aria-pressed") == "true"
    page.goto(http_site + "corpora/docs/index.html")  # remembered on the next page
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
    assert page.evaluate("() => document.querySelector('.curve-chart').layout.paper_bgcolor") \
        == "#14161a"
    page.click('[data-theme-choice="system"]')  # the system is light here
    page.wait_for_function("() => document.querySelector('.curve-chart').layout.paper_bgcolor"
                           " === '#ffffff'", timeout=10_000)
    assert page.evaluate(body) == "rgb(255, 255, 255)"
    assert errors == []
    context.close()


def test_the_published_site_is_deterministic(tmp_path, project):
    """The same project, rebuilt into another folder from its caches: byte-identical."""
    folder = copy_project(project, tmp_path / "again")
    shutil.rmtree(folder / "site")
    result = run_cli("build", folder / "prompts.yaml")
    assert result.returncode == 0, result.stderr

    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file()}

    one, two = tree(project / "site"), tree(folder / "site")
    assert one.keys() == two.keys() and [k for k in one if one[k] != two[k]] == []
