"""Where a build writes (issue 30): saved results are untrusted input, derived file names never
collide, every write stays in the site; site_url, corpora and lens kinds are checked at
their lines."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import REPO, run_cli, tiny_manifest, write_manifest
from lensreport.errors import LensReportError, ManifestError
from lensreport.lens.kinds import lens_names
from lensreport.manifest.parse import parse_manifest
from lensreport.results.documents import dumps, loads, restamp
from lensreport.results.metrics import CORPUS_METRICS
from lensreport.results.validation import InvalidDocument, check_prompt_document
from lensreport.site.outputs import SiteFiles, check_outputs, check_path
from lensreport.site.pages import plan_site

GOLDEN = REPO / "tests" / "golden" / "documents" / "tiny" / "fox.json"


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- Saved results are untrusted input ----------------------------------------------------


def _hostile(document: dict, change: str) -> dict:
    """``document`` with one field broken as an attacker or a damaged file would."""
    document = copy.deepcopy(document)
    if change == "kind":
        document["lens"]["kind"] = "/../../../../../../../../tmp/x/victim/PWNED"
    elif change == "shape":
        document["entropy"][1] = document["entropy"][1][:-1]
    elif change == "vocab":
        document["vocab"].pop(str(document["input_ids"][0]))
    elif change == "number":
        document["topk_probs"][0][0][0] = "1; alert(1)"
    elif change == "layers":
        document["layers"] = [0, "../x"]
    return document


@pytest.mark.parametrize("change", ["kind", "shape", "vocab", "number", "layers", "surrogate",
                                    "packed"])
def test_a_results_file_that_lies_is_refused_and_nothing_is_written(built_tiny, tmp_path,
                                                                      change):
    """Before: lens.kind became a file-name suffix and the build wrote
    /tmp/x/victim/PWNED.json; other broken fields crashed the render with a traceback."""
    manifest = built_tiny(tmp_path / "project")
    saved = tmp_path / "project" / "site" / "data" / "tiny" / "fox.json"
    before = {p: p.read_bytes() for p in (tmp_path / "project" / "site").rglob("*")
              if p.is_file()}
    # Lists (a reader takes them in any schema), so that any field can be broken.
    text = json.dumps(_hostile(loads(saved.read_text(encoding="utf-8")), change),
                      ensure_ascii=False, separators=(",", ":"))
    if change == "surrogate":  # a JSON escape Python reads as a lone surrogate
        text = text.replace('"name":"tiny"', '"name":"tiny\\ud800"', 1)
    elif change == "packed":
        packed = json.loads(saved.read_text(encoding="utf-8"))
        packed["tracked_probs"]["zlib"] += "AAAA"
        text = json.dumps(packed)
    hostile = tmp_path / "b.json"
    hostile.write_text(text, encoding="utf-8")
    (tmp_path / "a.json").write_bytes(saved.read_bytes())
    only_results = write_manifest(tmp_path / "project", """
        results: [../a.json, ../b.json]
    """, name="results.yaml")
    victim = Path(tempfile.gettempdir()) / "x" / "victim"
    result = run_cli("build", only_results, "--site-dir", tmp_path / "project" / "site")
    assert result.returncode != 0, result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "b.json" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (victim / "PWNED.json").exists() and not (victim / "PWNED.csv").exists()
    after = {p: p.read_bytes() for p in (tmp_path / "project" / "site").rglob("*")
             if p.is_file()}
    assert after == before  # the previous site is intact
    assert manifest.is_file()


def test_the_document_check_passes_what_the_writer_writes_and_names_the_place():
    document = loads(GOLDEN.read_text(encoding="utf-8"))
    check_prompt_document(document)
    check_prompt_document(loads(dumps(document)))  # schema 3, packed and unpacked
    with pytest.raises(InvalidDocument, match=r"entropy\[1\]: expected null or a list of 6"):
        check_prompt_document(_hostile(document, "shape"))
    with pytest.raises(InvalidDocument,
                       match=r"topk_probs\[0\]\[0\]\[0\]: expected probabilities from 0 to 1"):
        check_prompt_document(_hostile(document, "number"))
    with pytest.raises(InvalidDocument, match="lens.kind: expected a lens kind"):
        check_prompt_document(_hostile(document, "kind"))


@pytest.mark.parametrize("place, value, says", [
    (("entropy", 2, 3), float("nan"), r"entropy\[2\]\[3\]: not a finite number"),
    (("kl_to_final", 0, 1), float("inf"), r"kl_to_final\[0\]\[1\]: not a finite number"),
    (("topk_ids", 1, 0, 2), True, r"topk_ids\[1\]\[0\]\[2\]: expected token ids"),
    (("topk_ids", 1, 0, 0), -3, r"topk_ids\[1\]\[0\]\[0\]: expected token ids"),
    (("topk_probs", 3, 2, 1), float("-inf"), r"topk_probs\[3\]\[2\]\[1\]: not a finite"),
    (("next_token_rank", 1, 1), 2.5, r"next_token_rank\[1\]\[1\]: expected a rank"),
    (("tracked_probs", 2, 1, 0), float("nan"), r"tracked_probs\[2\]\[1\]\[0\]: not a fin"),
    # JSON integers have no bound: one past a float's would overflow a float conversion.
    (("entropy", 1, 1), 10 ** 400, r"entropy\[1\]\[1\]: expected a number"),
    (("next_token_rank", 2, 0), 2 ** 64, r"next_token_rank\[2\]\[0\]: expected a rank"),
    (("input_ids", 0), 10 ** 400, r"input_ids: expected a non-empty list of token ids"),
    # What the packer cannot write (its codecs' ranges) is refused at its place too, as is a
    # cell of another width than the field's first.
    (("topk_probs", 1, 0, 0), 1.5, r"topk_probs\[1\]\[0\]\[0\]: expected probabilities from 0"),
    (("target_prob", 2, 3), -0.25, r"target_prob\[2\]\[3\]: expected a probability from 0"),
    (("tracked_probs", 1, 2, 0), 3.0, r"tracked_probs\[1\]\[2\]: expected null or"),
    (("kl_to_final", 1, 2), 1e6, r"kl_to_final\[1\]\[2\]: expected a number from -214748 "),
    (("topk_ids", 2, 1, 0), 2 ** 32, r"topk_ids\[2\]\[1\]\[0\]: expected token ids"),
    (("topk_ids", 2, 3), [1], r"topk_ids\[2\]\[3\]: expected a list of \d+ token ids"),
    (("generator", "torch"), float("nan"), r"document.generator.torch: not a finite number"),
    (("lens", "final_norm"), [0.5, float("inf")], r"document.lens.final_norm\[1\]: not a fin"),
], ids=lambda value: f"1e{len(str(value)) - 1}" if type(value) is int and value > 10 ** 6
    else None)
def test_values_the_writer_never_writes_are_named(place, value, says):
    """NaN, infinities, booleans, negative ids, fractional ranks, integers too large for a
    float, values the packer's codecs cannot hold and cells of another width, among the
    numbers (which the checks pass over in bulk) or in any other field, are each refused at
    their place."""
    document = loads(GOLDEN.read_text(encoding="utf-8"))
    *path, last = place
    holder = document
    for key in path:
        holder = holder[key]
    holder[last] = value
    with pytest.raises(InvalidDocument, match=says):
        check_prompt_document(document)


def _leaf_places(value, place=()):
    """Every place in a document (keys and list indices), its leaves and containers."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_places(item, place + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_places(item, place + (index,))
    if place:
        yield place


GOLDEN_DOCUMENT = loads(GOLDEN.read_text(encoding="utf-8"))
GOLDEN_PLACES = list(_leaf_places(GOLDEN_DOCUMENT))
HOSTILE_VALUES = st.sampled_from([
    10 ** 400, -10 ** 400, 2 ** 64, 2 ** 53 + 1, -1, 0, 1.5, 1e6, -1e-9, float("nan"),
    float("inf"), True, None, "x", "\ud800", [], [1], [[None]], {}, {"a": 1}])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(GOLDEN_PLACES), HOSTILE_VALUES), min_size=1,
                max_size=3))
def test_property_a_document_is_refused_by_its_place_or_packs(changes):
    """Any value anywhere (one past a float's range, NaN, a probability above 1, a cell of
    another width, a list where a number goes, …): the check refuses the document with
    InvalidDocument, or the writer packs it and reads the same back. Before, such
    documents passed the check and failed later in the build with a bare error (a
    probability outside [0, 1], cells of different lengths, NaN not JSON compliant) or a
    traceback (OverflowError)."""
    document = copy.deepcopy(GOLDEN_DOCUMENT)
    for place, value in changes:
        holder = document
        try:
            for key in place[:-1]:
                holder = holder[key]
            holder[place[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced a container on this path
    try:
        check_prompt_document(document)
    except InvalidDocument:
        return
    assert loads(dumps(loads(dumps(document)))) == loads(dumps(document))


# --- Derived names never collide ----------------------------------------------------------


def test_names_that_spell_each_others_files_get_files_of_their_own(tmp_path, tiny_models,
                                                                    weights_cache):
    """Before: prompts fox and fox.raw (with a raw lens) shared data/m/fox.raw.json; a model
    m.raw shared m's raw corpus file; a model named corpora overwrote the corpus wiki's
    embed page; corpus groups x and x_ci crashed the build (KeyError 'group:x_ci')."""
    model = tiny_models("llama", "sentencepiece")
    (tmp_path / "corpus.txt").write_text("The quick brown fox.\n\nJumps over the dog.\n",
                                         encoding="utf-8")
    manifest = write_manifest(tmp_path, f"""
        models:
          - {{name: m, model: {model}, lens: {{kinds: [logit, raw]}}}}
          - {{name: m.raw, model: {model}}}
          - {{name: corpora, model: {model}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
          - {{name: fox.raw, text: "A lazy dog sleeps"}}
          - {{name: wiki, text: "Hello world"}}
        corpora:
          - name: wiki
            path: corpus.txt
            max_tokens: 30
            context: 8
            targets: {{x: {{word: the}}, x_ci: {{word: dog}}}}
    """)
    result = run_cli("build", manifest)
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    prompt_of = {path.relative_to(site).as_posix(): loads(path.read_text())["prompt"]["name"]
                 for path in site.glob("data/*/*.json")}
    assert prompt_of["data/m/fox.json"] == "fox" and prompt_of["data/m/fox.raw.json"] == "fox"
    assert prompt_of["data/m/fox-raw.json"] == "fox.raw"
    assert prompt_of["data/m/fox-raw.raw.json"] == "fox.raw"
    assert prompt_of["data/corpora-2/wiki.json"] == "wiki"
    curves = {path.name: loads(path.read_text())
              for path in site.glob("data/corpora/wiki/*.json")}
    assert sorted(curves) == ["corpora-2.json", "m-raw.json", "m.json", "m.raw.json"]
    assert curves["m.raw.json"]["lens"]["kind"] == "raw"
    assert curves["m-raw.json"]["model"]["name"] == "m.raw"
    groups = curves["m.json"]["target_groups"]
    assert [g["name"] for g in groups] == ["x", "x_ci"] and groups[0]["prob"] != groups[1]["prob"]
    assert "corpus-data" in (site / "embed" / "corpora" / "wiki.html").read_text()
    assert "corpus-data" not in (site / "embed" / "corpora-2" / "wiki.html").read_text()


NAMES = st.one_of(
    st.sampled_from(["fox", "fox.raw", "fox.tuned", "fox-raw", "long.part2", "long-part2",
                     "corpora", "wiki", "data", "assets", "embed", "figures", "index", "404",
                     "x", "x_ci", ".", "..", "a/b", "../../etc/passwd", "/abs", "fox--raw",
                     "Ω", "\u202e", "con", "m.raw", "sitemap.xml", "-", "_"]),
    st.text(min_size=1, max_size=10).filter(str.strip))


class _NoAliases(yaml.SafeDumper):
    """Every value written out (manifests refuse YAML aliases)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _long(document: dict, times: int) -> dict:
    """``document`` with its positions repeated ``times`` (a long prompt's figure has parts)."""
    document = copy.deepcopy(document)
    for name in ("input_ids", "input_tokens", "tracked_ids", "tracked_probs"):
        document[name] = document[name] * times
    for name in ("topk_ids", "topk_probs", "entropy", "kl_to_final", "next_token_prob",
                 "next_token_rank", "target_prob", "target_rank"):
        document[name] = [row * times for row in document[name]]
    return document


def _curves(model: str, corpus: str, groups: list[str]) -> dict:
    rows = 4
    return {"schema_version": 2, "layers": list(range(rows)),
            "model": {"name": model}, "lens": {"kind": "logit"},
            "corpus": {"name": corpus, "documents": 1},
            **{m.name: [0.5] * rows for m in CORPUS_METRICS},
            **{f"{m.name}_ci": None for m in CORPUS_METRICS},
            "target_groups": [{"name": g, "ids": [1], "prob": [0.1 * (i + 1)] * rows,
                               "prob_ci": None} for i, g in enumerate(groups)]}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(models=st.lists(NAMES, min_size=1, max_size=3, unique=True),
       prompts=st.lists(NAMES, min_size=1, max_size=3, unique=True),
       corpora=st.lists(NAMES, max_size=2, unique=True),
       groups=st.lists(NAMES, max_size=2, unique=True),
       kinds=st.lists(st.sampled_from(["logit", "raw"]), min_size=1, max_size=2, unique=True),
       export=st.booleans(), long=st.booleans())
def test_no_two_runs_share_a_file_and_no_path_leaves_the_site(models, prompts, corpora, groups,
                                                              kinds, export, long):
    folder = Path(tempfile.mkdtemp(prefix="paths-"))
    (folder / "c.txt").write_text("text\n", encoding="utf-8")
    group_spec = {name: [" a"] for name in groups} or None
    text = yaml.dump({
        "site": {"site_url": "https://user.github.io/repo/", "export": ["svg"] if export else []},
        "models": [{"name": name, "model": "gpt2", "lens": {"kinds": kinds}} for name in models],
        "prompts": [{"name": name, "text": "hi"} for name in prompts],
        **({"corpora": [{"name": name, "path": "c.txt", **({"targets": group_spec}
                                                            if group_spec else {})}
                        for name in corpora]} if corpora else {})}, allow_unicode=True,
        Dumper=_NoAliases)
    try:
        manifest = parse_manifest(folder / "prompts.yaml", text)
    except (ManifestError, LensReportError):
        assume(False)  # e.g. two names that are shown alike: refused at their lines
        return
    base = loads(GOLDEN.read_text(encoding="utf-8"))
    if long:
        base = _long(base, 30)  # 180 positions: two parts in a static figure
    documents = {}
    for model in manifest.models:
        for prompt in manifest.prompts:
            for kind in model.lens.kinds:
                document = copy.deepcopy(base)
                document["lens"]["kind"] = kind
                documents[model.name, prompt.name, kind] = restamp(
                    document, model.name, model.slug, prompt.name, prompt.slug)
    corpus_documents = {(corpus.name, model.name, kind): _curves(model.name, corpus.name,
                                                                  [g.name for g in corpus.targets])
                        for corpus in manifest.corpora for model in manifest.models
                        for kind in model.lens.kinds}
    outputs, jobs = plan_site(manifest, documents, corpus_documents)
    planned = [(o.path, o.what) for o in outputs] + [(j.path, j.path) for j in jobs]
    paths = [path for path, _ in planned]
    assert len(paths) == len(set(paths)), sorted(p for p in paths if paths.count(p) > 1)
    check_outputs(planned)  # inside the site; no file where another needs a folder
    runs = len(documents) + len(corpus_documents)
    assert sum(p.startswith("data/") and p.endswith(".json") for p in paths) == runs
    if long and export:
        assert any(".part2.svg" in p for p in paths)


def test_every_write_is_planned_once_and_inside_the_site(tmp_path):
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", "", "a/./b", "a/"):
        with pytest.raises(LensReportError, match="not a path inside the site"):
            check_path(bad)
    with pytest.raises(LensReportError, match="same file data/m/fox.raw.json"):
        check_outputs([("data/m/fox.raw.json", "one"), ("data/m/fox.raw.json", "two")])
    with pytest.raises(LensReportError, match="needs a folder"):
        check_outputs([("embed/corpora", "one"), ("embed/corpora/wiki.html", "two")])
    site = tmp_path / "site"
    (site / "assets").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (site / "assets" / "link").symlink_to(tmp_path / "outside")
    files = SiteFiles(site, {"a.txt", "assets/link/x.txt"})
    files.write("a.txt", "ok")
    with pytest.raises(LensReportError, match="written twice"):
        files.write("a.txt", "again")
    with pytest.raises(LensReportError, match="not among the planned"):
        files.write("b.txt", "no")
    with pytest.raises(LensReportError, match="leads outside"):
        files.write("assets/link/x.txt", "no")
    assert not (tmp_path / "outside" / "x.txt").exists()


# --- Checked at their lines ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://example.org/\nDisallow: /", "https://example.org/\x01",
                                 'https://example.org/x"onload="alert(1)',
                                 "https://exa mple.org/", "javascript://x", "https://"])
def test_a_site_url_that_is_not_a_url_is_an_error_at_its_line(tmp_path, tiny_llama, url):
    """Before: only the http(s):// prefix was checked; a newline added a robots.txt line."""
    manifest = tiny_manifest(tmp_path, tiny_llama, extra=f"  site_url: {json.dumps(url)}\n")
    result = run_cli("validate", manifest)
    assert result.returncode != 0
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and f"{manifest}:3: site.site_url: expected an http(s) URL" in \
        errors[0], result.stderr


def test_a_corpus_that_is_not_utf8_names_its_file_and_line(tmp_path, tiny_llama):
    (tmp_path / "corpus.txt").write_bytes(b"fine text\n\nsecond\n caf\xe9 latin-1\n")
    manifest = tiny_manifest(tmp_path, tiny_llama, prompts="corpora:\n"
                             "  - {name: docs, path: corpus.txt, max_tokens: 30, context: 8}\n")
    result = run_cli("build", manifest)
    assert result.returncode != 0
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path / 'corpus.txt'}:4: not UTF-8 text (byte 0xe9" in errors[0]


def test_an_unknown_lens_kind_is_named(tmp_path, tiny_llama):
    """Before: 'expected a list of distinct lens kinds …, got a list'."""
    manifest = write_manifest(tmp_path, f"""
        models:
          - name: m
            model: {tiny_llama}
            lens: {{kinds: [logit, tunde]}}
          - name: n
            model: {tiny_llama}
            lens: {{kinds: [raw, raw]}}
        prompts:
          - {{name: fox, text: hi}}
    """)
    result = run_cli("validate", manifest)
    assert result.returncode != 0
    assert (f"{manifest}:4: model 'm'.lens.kinds: unknown lens kind 'tunde' (did you mean "
            f"'tuned'?); known: {', '.join(lens_names())}") in result.stderr
    assert f"{manifest}:7: model 'n'.lens.kinds: lens kind 'raw' is listed twice" \
        in result.stderr
