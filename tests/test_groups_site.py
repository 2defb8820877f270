"""Token groups, chat templates and generated text on pages (issue 19): the documents as read,
the heatmap's group, log-probability and rank metrics, group curves on the depth chart,
group trajectories, the chat page's marks, corpus group curves and the notebook output,
checked in real Chromium against the JSON behind them."""

from __future__ import annotations

import json
import math

import pytest

from conftest import run_cli, static_server, write_manifest
from lensreport.api import LensResult
from lensreport.site.figures import first_view, summary
from test_jacobian_site import hover_text, pick_cell
from tiny import save_chat_model

HOSTILE = "<b>bold</b> & co"  # a group name: data, never markup
DOCS = ["The capital of France is Paris.", "one two three four five", "The quick brown fox.",
        "The lazy dog sleeps.", "quick quick, the fox.", "def add(a, b): return a"]
TEMPLATE_COLOUR = "#8d939c"  # --template-token in style.css


def read(path) -> dict:
    """A results document as the site and the notebook read it (LensResult.load)."""
    return LensResult.load(path).document


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)


LOG_FLOOR = -40.0  # lensreport.js: log10 of a probability that underflowed to 0


def log10(p: float | None) -> float | None:
    return None if p is None else (math.log10(p) if p > 0 else LOG_FLOOR)


def column(rows, position: int) -> list:
    return [None if row is None else row[position] for row in rows]


def z_of(page, heatmap):
    return page.evaluate("el => el.data[0].z", heatmap.element_handle())


def select_metric(page, section, key: str) -> dict:
    """Pick ``key`` in the figure's real <select>; the heatmap trace once its z changed."""
    heatmap = section.locator(".heatmap")
    before = page.evaluate("el => JSON.stringify(el.data[0].z)", heatmap.element_handle())
    section.locator(".metric-select").select_option(key)
    page.wait_for_function("([el, z]) => JSON.stringify(el.data[0].z) !== z",
                           arg=[heatmap.element_handle(), before], timeout=10_000)
    return page.evaluate("""el => ({z: el.data[0].z, reversescale: el.data[0].reversescale,
        zmin: el.data[0].zmin, zmax: el.data[0].zmax, ticktext: el.data[0].colorbar.ticktext,
        title: el.data[0].colorbar.title.text})""", heatmap.element_handle())


def assert_grid(z, expected, abs_tol: float) -> None:
    assert len(z) == len(expected)
    for got, want in zip(z, expected):
        assert got == pytest.approx(want, abs=abs_tol)


# --- A tiny site: groups (one with a hostile name), a chat with generation, corpus groups ----


@pytest.fixture(scope="module")
def group_site(tmp_path_factory, tiny_models, weights_cache):
    root = tmp_path_factory.mktemp("group-site")
    folder = save_chat_model(tiny_models("llama"), root / "chat-model")
    (root / "corpus.txt").write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
    manifest = write_manifest(root, f"""
        models:
          - {{name: tiny, model: {folder}}}
        prompts:
          - name: fox
            text: "The quick brown fox jumps over the lazy"
            target: " the"
            targets:
              "{HOSTILE}": [" the", " fox"]
              quick: {{word: quick}}
          - name: chat
            messages:
              - {{role: system, content: "Be brief."}}
              - {{role: user, content: "The quick brown fox"}}
            generate: 4
            targets:
              quick: {{word: quick}}
        corpora:
          - name: docs
            path: corpus.txt
            max_tokens: 120
            context: 16
            targets:
              quick: {{word: quick}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    return root / "site"


@pytest.mark.browser
def test_the_page_reads_groups_logs_and_chat_marks_from_the_documents(group_site, page):
    """What the browser makes of each inlined document (lensreport.js fromDocument): every
    group's per-cell probability, log10, rank and members, the next token's log10, the chat
    marks; the depth curves (computed in Python) are the document's own numbers."""
    fox = read(group_site / "data/tiny/fox.json")
    chat = read(group_site / "data/tiny/chat.json")
    for name, document in (("fox", fox), ("chat", chat)):
        open_page(page, (group_site / f"prompts/{name}/index.html").as_uri())
        data = page.evaluate("() => lensreport.figures[0].d")
        length, layers = len(document["input_ids"]), len(document["layers"])
        assert [g["name"] for g in data["groups"]] == [g["name"] for g in document["target_groups"]]
        for group, source in zip(data["groups"], document["target_groups"]):
            assert group["ids"] == source["ids"] and group["m"] == min(3, len(source["ids"]))
            for layer in range(layers):
                for position in range(length):
                    cell = layer * length + position
                    p = source["prob"][layer][position]
                    assert group["prob"][cell] == p
                    assert group["logp"][cell] == pytest.approx(log10(p), abs=1e-12)
                    assert group["rank"][cell] == source["rank"][layer][position]
                    members = group["top_ids"][cell * group["m"]:(cell + 1) * group["m"]]
                    assert members == source["top_ids"][layer][position]
            assert {str(i) for i in group["ids"]} <= set(data["vocab"])
        next_logp = [log10(p) for row in document["next_token_prob"] for p in row]
        assert data["next_token_logp"] == [None if v is None else pytest.approx(v, abs=1e-12)
                                           for v in next_logp]
        assert data["vocab_size"] == document["model"]["vocab_size"]
        # tracked_probs, unpacked from float16 in the browser: the values Python reads.
        assert data["tracked_probs"] == [[v for row in rows for v in row]
                                         for rows in document["tracked_probs"]]
        depth = page.evaluate("() => lensreport.figures[0].info.lenses[0].depth")
        position = chat["generated_from"] - 1 if name == "chat" else length - 1
        for curve, group in zip(depth[-len(document["target_groups"]):], document["target_groups"]):
            assert curve["y"] == column(group["prob"], position)
        assert not page.errors, page.errors
    # Plain prompts: no chat marks; the chat: its template mask and where generation starts.
    assert fox["template_mask"] is None and fox["generated_from"] is None
    assert data["template_mask"] == chat["template_mask"] and any(chat["template_mask"])
    assert data["generated_from"] == chat["generated_from"] is not None
    light = first_view(chat)  # a long prompt's first view: the marks, no groups
    assert light["template_mask"] == chat["template_mask"] and "target_groups" not in light
    assert light["generated_from"] == chat["generated_from"]
    # What the index says the model predicts after the prompt: before the generated text,
    # i.e. the first generated token (greedy), not the prediction after the continuation.
    start = chat["generated_from"]
    assert summary(chat)["answer"] == chat["vocab"][str(chat["input_ids"][start])]


@pytest.mark.browser
def test_group_names_are_text_on_the_page(group_site, page):
    open_page(page, (group_site / "prompts/fox/index.html").as_uri())
    section = page.locator("section.figure")
    assert section.count() == 1
    labels = section.locator(".metric-select option").all_inner_texts()
    assert f"P({HOSTILE})" in labels and f"log₁₀ P({HOSTILE})" in labels
    trace = select_metric(page, section, f"group:{HOSTILE}")
    document = read(group_site / "data/tiny/fox.json")
    group = next(g for g in document["target_groups"] if g["name"] == HOSTILE)
    assert_grid(trace["z"], group["prob"], 1e-4)
    title = section.locator(".heatmap .cbtitle text")
    assert title.count() == 1 and title.text_content() == f"P({HOSTILE})"
    assert section.locator(".heatmap .cbtitle tspan[style*='bold']").count() == 0
    legend = page.locator(".comparison-chart .legendtext").all_text_contents()
    assert f"tiny: P({HOSTILE})" in legend, legend
    assert page.locator(".comparison-chart .legendtext tspan[style*='bold']").count() == 0
    assert page.errors == []


@pytest.mark.browser
def test_the_corpus_page_draws_group_curves(group_site, page):
    curves = json.loads((group_site / "data/corpora/docs/tiny.json").read_text())
    [group] = curves["target_groups"]
    assert group["prob_ci"] is not None  # six documents: an interval
    for path in ("corpora/docs/index.html", "embed/corpora/docs.html"):
        open_page(page, (group_site / path).as_uri())
        panel = page.locator('.curve-panel[data-metric="group:quick"]')
        assert panel.count() == 1 and panel.locator("h3").inner_text() == "P(quick)"
        traces = page.evaluate("""el => el.data.map(t => ({name: t.name, group: t.legendgroup,
            y: t.y, fill: t.fill || null}))""", panel.locator(".curve-chart").element_handle())
        assert len(traces) == 3  # the band's two edges and the line
        [line] = [t for t in traces if t["name"] == "tiny (logit lens)"]
        assert line["y"] == pytest.approx(group["prob"])
        low = [t for t in traces if t["fill"] == "tonexty"]
        assert len(low) == 1 and low[0]["y"] == pytest.approx([c[0] for c in group["prob_ci"]])
        rendered = panel.locator(".curve-chart .scatterlayer .trace")
        assert rendered.count() == 3
        assert page.errors == [], path
    table = (group_site / "corpora/docs/index.html").read_text(encoding="utf-8")
    assert '<th scope="col">P(quick)</th>' in table
    assert f"{group['prob'][0]:.4f}" in table


# --- The demo site: the translation prompt (two groups, two models), the chat prompt -------


@pytest.mark.slow
@pytest.mark.browser
def test_group_log_and_rank_metrics_recolour_the_heatmap(demo_site, page):
    """On the embed page, over HTTP (an embed inlines its first view and fetches the rest)."""
    with static_server(demo_site) as base:
        check_group_metrics(demo_site, page, base + "embed/gemma-3-270m/translation.html")


def check_group_metrics(demo_site, page, url: str) -> None:
    document = read(demo_site / "data/gemma-3-270m/translation.json")
    groups = {g["name"]: g for g in document["target_groups"]}
    page.set_viewport_size({"width": 3300, "height": 900})  # the whole heatmap on screen
    open_page(page, url)
    page.wait_for_function("() => !lensreport.figures[0].partial", timeout=30_000)
    section = page.locator('section[id="fig-gemma-3-270m--translation"]')
    values = section.locator(".metric-select option").evaluate_all("os => os.map(o => o.value)")
    for key in ("next_log", "next_rank", "group:english", "group_log:english",
                "group_rank:english", "group:french", "group_log:french", "group_rank:french"):
        assert key in values, values
    trace = select_metric(page, section, "group:french")
    assert_grid(trace["z"], groups["french"]["prob"], 1e-4)
    assert (trace["zmin"], trace["zmax"]) == (0, 1)
    trace = select_metric(page, section, "group_log:french")
    assert_grid(trace["z"], [[log10(p) for p in row] for row in groups["french"]["prob"]], 6e-3)
    assert (trace["zmin"], trace["zmax"]) == (-8, 0)
    assert trace["ticktext"] == ["10⁻⁸", "10⁻⁶", "10⁻⁴", "10⁻²", "1"]
    trace = select_metric(page, section, "group_rank:english")
    assert_grid(trace["z"], [[math.log10(r) for r in row] for row in groups["english"]["rank"]],
                1e-9)
    assert trace["reversescale"] is True  # rank 1 gets the colour of a high probability
    assert trace["zmax"] == pytest.approx(math.log10(document["model"]["vocab_size"]))
    assert trace["ticktext"][:4] == ["1", "10", "100", "1000"]
    rendered = section.locator(".heatmap .cbaxis text").all_text_contents()
    assert {"1", "10", "100"} <= set(rendered), rendered
    trace = select_metric(page, section, "next_rank")
    expected = [[None if r is None else math.log10(r) for r in row]
                for row in document["next_token_rank"]]
    assert_grid([row[:-1] for row in trace["z"]], [row[:-1] for row in expected], 1e-9)
    assert all(row[-1] is None for row in trace["z"])  # no next token after the last
    # Hover lists the group's most likely members at the cell, with their probabilities.
    depth, position = 13, len(document["input_ids"]) - 1
    text = hover_text(page, section.locator(".heatmap"), depth, position)
    layer = document["row_depths"].index(depth)  # the row at that depth
    for name, group in groups.items():
        member = document["vocab"][str(group["top_ids"][layer][position][0])]
        assert f"P({name}) " in text and f"rank {group['rank'][layer][position]}" in text
        assert json.dumps(member, ensure_ascii=False) in text, (name, member, text)
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.browser
def test_the_depth_chart_and_trajectories_show_each_group(demo_site, page):
    open_page(page, (demo_site / "prompts/translation/index.html").as_uri())
    help_text = page.locator(".comparison .help").inner_text()
    assert "token group" in help_text and "last position" in help_text
    traces = page.evaluate("() => document.querySelector('.comparison-chart').data"
                           ".map(t => ({name: t.name, x: t.x, y: t.y}))")
    names = {t["name"] for t in traces}
    for group in ("english", "french"):
        for lens in ("logit", "tuned"):
            assert f"smollm2-135m ({lens} lens): P({group})" in names, names
        assert f"gemma-3-270m: P({group})" in names, names
    document = read(demo_site / "data/gemma-3-270m/translation.json")
    french = next(g for g in document["target_groups"] if g["name"] == "french")
    [curve] = [t for t in traces if t["name"] == "gemma-3-270m: P(french)"]
    last, rows = len(document["input_ids"]) - 1, len(document["layers"])
    assert curve["y"] == pytest.approx(column(french["prob"], last), abs=1e-4)
    assert curve["x"] == pytest.approx([row / (rows - 1) for row in range(rows)])
    # The trajectory panel: the groups at the last position by default; pick another cell
    # and follow P(english) there.
    document = read(demo_site / "data/smollm2-135m/translation.json")
    last, rows = len(document["input_ids"]) - 1, len(document["layers"])
    section = page.locator('section[id="fig-smollm2-135m--translation"]')
    trajectory = section.locator(".trajectory")
    shown = page.evaluate("el => el.data.map(t => t.name)", trajectory.element_handle())
    assert f"P(french) @ {document['vocab'][str(document['input_ids'][last])]} (pos {last})" \
        in shown, shown
    position = 5
    pick_cell(page, section.locator(".heatmap"), document["row_depths"][-1] - 1, position,
              section.locator(".token-picker").element_handle(),
              f"el => el.textContent.includes('position {position} ') && "
              "el.querySelector('button[data-group=\"english\"]') !== null")
    count = len(shown)
    section.locator('.token-picker button[data-group="english"]').click()
    page.wait_for_function("([el, n]) => el.data.length === n + 1",
                           arg=[trajectory.element_handle(), count], timeout=10_000)
    added = page.evaluate("el => el.data[el.data.length - 1]", trajectory.element_handle())
    assert added["name"].startswith("P(english) @ ") and added["name"].endswith(f"(pos {position})")
    english = next(g for g in document["target_groups"] if g["name"] == "english")
    assert added["y"] == pytest.approx(column(english["prob"], position), abs=1e-4)
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.browser
def test_the_chat_page_dims_the_template_and_marks_the_generated_text(demo_site, page):
    document = read(demo_site / "data/smollm2-135m/chat.json")
    mask, start = document["template_mask"], document["generated_from"]
    assert start is not None and any(mask)
    open_page(page, (demo_site / "prompts/chat/index.html").as_uri())
    messages = page.locator(".chat-messages .chat-message")
    assert messages.count() == len(document["prompt"]["messages"]) == 1
    assert messages.first.locator(".chat-role").inner_text().lower() == "user"
    assert messages.first.locator(".prompt-text").inner_text() == \
        document["prompt"]["messages"][0]["content"]
    assert "prompt's last position" in page.locator(".comparison .help").inner_text()
    section = page.locator('section[id="fig-smollm2-135m--chat"]')
    heatmap = section.locator(".heatmap")
    layout = page.evaluate("el => ({shapes: el.layout.shapes, notes: el.layout.annotations})",
                           heatmap.element_handle())
    [line] = layout["shapes"]
    assert line["x0"] == line["x1"] == start - 0.5 and line["yref"] == "paper"
    assert [a["text"] for a in layout["notes"]] == ["generated →"]
    assert heatmap.locator(".annotation-text").all_text_contents() == ["generated →"]
    assert heatmap.locator(".shapelayer path").count() >= 1
    # Every x tick as drawn: dimmed where the token is the template's, bold once generated.
    ticks = page.evaluate("""el => [...el.querySelectorAll('.xtick text')].map(t => ({
        x: t.__data__.x, text: t.textContent,
        dim: [...t.querySelectorAll('tspan')]
            .some(s => (s.getAttribute('style') || '').includes(%r)),
        bold: t.querySelector('tspan[style*="bold"]') !== null}))""" % TEMPLATE_COLOUR,
                          heatmap.element_handle())
    assert sorted(t["x"] for t in ticks) == list(range(len(document["input_ids"])))
    for tick in ticks:
        position = tick["x"]
        assert tick["dim"] == (position < start and mask[position]), tick
        assert tick["bold"] == (position >= start), tick
    legend = section.locator(".token-legend")
    assert legend.count() == 1 and "Dimmed tokens" in legend.inner_text()
    assert section.locator(".generated-text").inner_text() == \
        "".join(document["input_tokens"][start:])
    # Hover says what a position is (the embed page, wide enough to show every column).
    page.set_viewport_size({"width": 3100, "height": 900})
    open_page(page, (demo_site / "embed/smollm2-135m/chat.html").as_uri())
    heatmap = page.locator(".heatmap")
    assert page.locator(".token-legend").count() == 1
    assert "(chat template)" in hover_text(page, heatmap, 3, mask.index(True))
    assert "(chat template)" not in hover_text(page, heatmap, 3, mask.index(False))
    assert "(generated)" in hover_text(page, heatmap, 3, start)
    assert page.errors == []
