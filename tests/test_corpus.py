"""Corpus curves: the window convention, numbers against an independent computation, pages."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli, write_manifest
from lensreport.lens.corpus import CorpusSource, documents, windows
from lensreport.results.metrics import MIN_INTERVAL_DOCUMENTS
from lensreport.results.documents import loads
from lensreport.results.validation import InvalidDocument, check_corpus_document

DOCS = ["The quick brown fox jumps over the lazy dog. " * 3,
        "one two three four five six seven eight nine ten",
        "Les élèves étudient à l'école. Ünïcödé, 日本語, emoji 🦊.",
        "def add(a, b):\n    return a + b\n" * 2]
# Short documents first: enough of them in a small budget for a confidence interval.
MANY_DOCS = ["The capital of France is Paris.", "one two three four five",
             "Hello world! true True TRUE false", "The lazy dog sleeps.",
             "def add(a, b): return a"] + DOCS


def write_corpus(folder: Path, docs: list[str] = DOCS) -> Path:
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def reference_units(tokenizer, texts, context, budget):
    """The README's convention, written out plainly: (document index, window ids)."""
    out, scored = [], 0
    for index, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        for start in range(0, len(ids), context):
            chunk = ids[start:start + context]
            if len(chunk) < 2:
                continue
            chunk = chunk[:budget - scored + 1]
            out.append((index, chunk))
            scored += len(chunk) - 1
            if scored >= budget:
                return out
    return out


def reference_windows(tokenizer, texts, context, budget):
    return [chunk for _, chunk in reference_units(tokenizer, texts, context, budget)]


def test_documents_and_windows_follow_the_convention(tmp_path, tiny_models):
    path = write_corpus(tmp_path)
    assert list(documents(CorpusSource(path=path))) == [d.rstrip("\n") for d in DOCS]
    from tokenizers import processors

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("llama", "sentencepiece"))
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", bos)])  # adds BOS, as Llama's does
    assert tokenizer("a")["input_ids"][0] == bos
    texts = [d.rstrip("\n") for d in DOCS]
    got = list(windows(CorpusSource(path=path), tokenizer, 8, 50))
    assert [w.input_ids for w in got] == reference_windows(tokenizer, texts, 8, 50)
    assert sum(len(w.input_ids) - 1 for w in got) == 50
    firsts = [w for i, w in enumerate(got) if i == 0 or got[i - 1].document != w.document]
    assert all(w.input_ids[0] == bos for w in firsts)
    assert all(bos not in w.input_ids for w in got if w not in firsts)
    # Bytes: every scored token covers the text since the token before it; a whole
    # document's windows cover all its bytes but those of the first token of each window.
    whole = [w for w in windows(CorpusSource(path=path), tokenizer, 10_000, 10_000)]
    for window, text in zip(whole, texts):
        assert sum(window.target_bytes) == len(text.encode("utf-8"))


def test_jsonl_corpus_and_its_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "first"}\n\n{"text": "second", "id": 2}\n{"body": "x"}\n')
    reader = documents(CorpusSource(path=path))
    assert [next(reader), next(reader)] == ["first", "second"]
    with pytest.raises(Exception, match=r"c.jsonl:4: no text field 'text'"):
        next(reader)


def independent_rows(model, norm, window, softcap=None):
    """Per-row log-probabilities by hand, one row at a time (a Gemma row is 0.3 GB):
    final norm -> unembedding -> log-softmax in float32."""
    ids = torch.tensor([window])
    with torch.no_grad():
        output = model(input_ids=ids, output_hidden_states=True)
        head = model.get_output_embeddings()
        for hidden in output.hidden_states[:-1]:
            logits = head(norm(hidden))[0].float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            yield torch.log_softmax(logits, -1)
        yield torch.log_softmax(output.logits[0].float(), -1)


def _near_tie(logp: torch.Tensor) -> torch.Tensor:
    """Per position: the top two log-probabilities within float32 matmul noise, where
    another CPU or tile shape may pick the other as top-1."""
    top2 = logp.topk(2, -1).values
    return (top2[:, 0] - top2[:, 1]) < 1e-4 * top2[:, 0].abs().clamp_min(1.0)


def check_curves(document, model, norm, tokenizer, texts, context, budget, softcap=None):
    """The document's curves against a computation by hand; returns how many documents
    were scored (intervals need MIN_INTERVAL_DOCUMENTS of them, else they are null)."""
    units = reference_units(tokenizer, texts, context, budget)
    chunks = [chunk for _, chunk in units]
    scored_documents = len({index for index, _ in units})
    layers = len(document["layers"])
    ce = [0.0] * layers
    kl = [0.0] * layers
    agree = [0.0] * layers
    near_ties = [0] * layers  # cells whose agreement depends on how a near-tie breaks
    tokens = 0
    for chunk in chunks:
        targets = torch.tensor(chunk[1:])
        with torch.no_grad():
            final = torch.log_softmax(model(input_ids=torch.tensor([chunk])).logits[0].float(),
                                      -1)[:-1]
            final_p = final.exp()
        final_tied = _near_tie(final)
        for layer, logp in enumerate(independent_rows(model, norm, chunk, softcap)):
            logp = logp[:-1]
            ce[layer] += float(-logp.gather(1, targets[:, None]).sum())
            kl[layer] += float((final_p * (final - logp)).sum())
            agree[layer] += float((logp.argmax(-1) == final.argmax(-1)).sum())
            near_ties[layer] += int((_near_tie(logp) | final_tied).sum())
            del logp
        tokens += len(chunk) - 1
    assert document["scored_tokens"] == tokens == budget
    for layer in range(layers):
        assert document["cross_entropy"][layer] == pytest.approx(ce[layer] / tokens, rel=1e-3)
        assert document["kl_to_final"][layer] == pytest.approx(kl[layer] / tokens, rel=1e-3,
                                                               abs=1e-4)
        assert document["top1_agrees_with_final"][layer] == pytest.approx(
            agree[layer] / tokens, abs=near_ties[layer] / tokens + 1e-6)
        if scored_documents >= MIN_INTERVAL_DOCUMENTS:
            low, high = document["cross_entropy_ci"][layer]
            assert low <= document["cross_entropy"][layer] <= high
        bits = document["bits_per_byte"][layer] * document["scored_bytes"] * math.log(2)
        assert bits == pytest.approx(ce[layer], rel=1e-3)
    if scored_documents < MIN_INTERVAL_DOCUMENTS:
        assert document["cross_entropy_ci"] is None, scored_documents
    assert document["kl_to_final"][-1] == 0.0 and document["top1_agrees_with_final"][-1] == 1.0
    return scored_documents


@pytest.mark.parametrize("family, tokenizer_kind, norm_path, softcap, docs", [
    ("llama", "sentencepiece", "model.norm", None, MANY_DOCS),
    ("gemma2", "sentencepiece", "model.norm", 3.0, MANY_DOCS),
    ("gpt2", "byte_level", "transformer.ln_f", None, DOCS)], ids=["llama", "gemma2", "gpt2"])
def test_curves_match_an_independent_computation(family, tokenizer_kind, norm_path, softcap,
                                                 docs, tmp_path, tiny_models, weights_cache):
    """With intervals (5 documents or more scored) and without (fewer)."""
    folder = tiny_models(family, tokenizer_kind)
    write_corpus(tmp_path, docs)
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: tiny, model: {folder}}}
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 60, context: 16}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    document = loads((tmp_path / "site/data/corpora/docs/tiny.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    norm = model.get_submodule(norm_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    scored = check_curves(document, model, norm, tokenizer, [d.rstrip("\n") for d in docs], 16,
                          60, softcap)
    assert (scored >= MIN_INTERVAL_DOCUMENTS) == (docs is MANY_DOCS), scored
    assert (tmp_path / "site/corpora/docs/index.html").is_file()
    assert (tmp_path / "site/embed/corpora/docs.html").is_file()
    # Cached like prompt runs: a rebuild computes nothing.
    again = run_cli("build", manifest)
    assert "0 run(s) computed, 1 from the cache" in again.stderr


def test_corpus_errors_point_at_the_manifest(tmp_path):
    manifest = write_manifest(tmp_path, """
        models:
          - {name: m, model: org/m}
        corpora:
          - {name: docs, path: missing.txt}
          - {name: both, path: a.txt, dataset: wikitext}
          - {name: small, path: a.md, context: 1}
    """)
    result = run_cli("validate", manifest)
    assert result.returncode == 2
    assert f"{manifest}:4: corpus 'docs'.path: 'missing.txt' does not exist" in result.stderr
    assert f"{manifest}:5: corpus 'both': give exactly one of 'path'" in result.stderr
    assert f"{manifest}:6: corpus 'small'.path: 'a.md' is neither" in result.stderr
    assert "context: expected an integer of at least 2" in result.stderr


@pytest.mark.slow
def test_demo_curves_match_an_independent_computation(demo_site, demo_models):
    """Both real demo models, on the demo corpus (prompts/corpus/eval.txt)."""
    from lensreport.manifest import load_manifest

    manifest = load_manifest(demo_site.parent / "demo.yaml")  # the manifest that was built
    corpus = manifest.corpora[0]
    texts = list(documents(corpus.source))
    for model_name, norm_path in (("smollm2-135m", "model.norm"),
                                  ("gemma-3-270m", "model.norm")):
        document = loads((demo_site / "data" / "corpora" / corpus.slug /
                               f"{model_name}.json").read_text())
        model, tokenizer = demo_models(model_name)
        softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        check_curves(document, model, model.get_submodule(norm_path), tokenizer, texts,
                     corpus.context, corpus.max_tokens, softcap)


@pytest.mark.browser
def test_corpus_page_draws_curves_bands_and_hover(tmp_path, tiny_models, weights_cache, page):
    write_corpus(tmp_path, MANY_DOCS)  # enough documents for intervals: bands to draw
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: "a <b>", model: {tiny_models("llama", "sentencepiece")}}}
          - {{name: b, model: {tiny_models("gpt2")}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 40, context: 16}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    for path in ("corpora/docs/index.html", "embed/corpora/docs.html"):
        page.goto((site / path).as_uri())
        page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
        panels = page.locator(".curve-panel")
        assert panels.count() == 6
        assert page.locator(".curve-panel .main-svg").count() >= 6
        fills = page.evaluate("() => [...document.querySelectorAll('.curve-chart')].map("
                              "el => el.data.filter(t => t.fill === 'tonexty').length)")
        assert fills == [2] * 6  # one band per (model, lens)
        names = page.evaluate("() => document.querySelector('.curve-chart').data"
                              ".filter(t => t.showlegend !== false).map(t => t.name)")
        assert names == ["a &lt;b&gt; (logit lens)", "b (logit lens)"]
        assert page.errors == []
    page.goto((site / "corpora/docs/index.html").as_uri())
    page.wait_for_selector("html[data-figures-ready]", timeout=30_000)
    chart = page.locator('.curve-panel[data-metric="entropy"] .curve-chart')  # a linear axis
    chart.scroll_into_view_if_needed()
    x, y = page.evaluate("""el => {
        const layout = el._fullLayout, line = el.data[2];
        return [layout.xaxis._offset + layout.xaxis.l2p(line.x[0]),
                layout.yaxis._offset + layout.yaxis.l2p(line.y[0])];
    }""", chart.element_handle())
    box = chart.bounding_box()
    page.mouse.move(box["x"] + x + 3, box["y"] + y + 3)
    page.mouse.move(box["x"] + x, box["y"] + y)
    hover = chart.locator(".hoverlayer .hovertext")
    hover.first.wait_for(timeout=10_000)
    assert "layer 0:" in hover.first.text_content()
    # Cross-entropy, bits and KL span orders of magnitude: log axes.
    assert page.evaluate("() => [...document.querySelectorAll('.curve-chart')].map("
                         "el => el._fullLayout.yaxis.type)") == ["log", "log", "log", "linear",
                                                            "linear", "linear"]
    before = page.evaluate("() => document.querySelector('.curve-chart').data[2].x")
    page.select_option(".depth-select", "layer")
    page.wait_for_function("before => JSON.stringify(document.querySelector('.curve-chart')"
                           ".data[2].x) !== before", arg=json.dumps(before), timeout=10_000)
    xs = page.evaluate("() => document.querySelector('.curve-chart').data[2].x")
    assert xs == list(range(len(xs))) and xs != before
    index = (site / "index.html").read_text()
    assert 'href="corpora/docs/index.html"' in index
    assert 'corpora/docs/index.html' in (site / "models" / "b" / "index.html").read_text()


def test_a_corpus_named_like_a_model_keeps_every_document(tmp_path, tiny_models, weights_cache):
    """Corpus 'a' on model 'b' and model 'a' on prompt 'b' share (name, name, lens): the
    build keeps prompt documents and curves apart."""
    write_corpus(tmp_path)
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: a, model: {tiny_models("gpt2")}}}
          - {{name: b, model: {tiny_models("llama", "sentencepiece")}}}
        prompts:
          - {{name: b, text: "The quick brown fox"}}
        corpora:
          - {{name: a, path: corpus.txt, max_tokens: 20, context: 16}}
    """)
    for _ in range(2):  # computed, then from the cache
        result = run_cli("build", manifest)
        assert result.returncode == 0, result.stderr
        site = tmp_path / "site"
        prompt = loads((site / "data" / "a" / "b.json").read_text())
        curves = loads((site / "data" / "corpora" / "a" / "b.json").read_text())
        assert prompt["prompt"]["text"] == "The quick brown fox" and prompt["model"]["name"] == "a"
        assert curves["corpus"]["name"] == "a" and curves["model"]["name"] == "b"


CORPUS_CHANGES = [
    (lambda d: d["cross_entropy"].__setitem__(1, float("nan")),
     r"document.cross_entropy\[1\]: not a finite number"),
    (lambda d: d["kl_to_final"].pop(), r"kl_to_final: expected a list of \d+ numbers or nulls"),
    (lambda d: d.__setitem__("entropy_ci", [[0.1]] * len(d["layers"])),
     r"entropy_ci: expected null or a list of \d+ \[low, high\] pairs"),
    (lambda d: d["target_groups"].append({"name": "g", "ids": [-1], "prob": []}),
     r"target_groups\[0\].ids: expected a list of token ids"),
    (lambda d: d.pop("bits_per_byte"), r"bits_per_byte: missing"),
]


def test_a_corpus_entry_of_the_store_is_checked_and_recomputed(tmp_path, tiny_models,
                                                                weights_cache):
    """A corpus entry of the results store (which may be shared) is input too: one that is
    not as written is named by its place, and a build warns, recomputes and replaces it
    (before, a NaN there failed the build with a bare JSON error)."""
    write_corpus(tmp_path)
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: m, model: {tiny_models("gpt2")}}}
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 20, context: 16}}
    """)
    assert run_cli("build", manifest).returncode == 0
    (entry,) = (tmp_path / ".lensreport-cache").rglob("*.json")
    written = json.loads(entry.read_text())
    check_corpus_document(written)
    for change, says in CORPUS_CHANGES:
        broken = copy.deepcopy(written)
        change(broken)
        with pytest.raises(InvalidDocument, match=says):
            check_corpus_document(broken)
    CORPUS_CHANGES[0][0](written)
    entry.write_text(json.dumps(written))  # NaN, as Python's json writes it
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    assert "warning: results cache entry" in result.stderr and "1 run(s) computed" in result.stderr
    check_corpus_document(json.loads(entry.read_text()))  # replaced by a good one
