"""Golden pages: the templates rendered from canned results documents (tests/golden/),
compared byte for byte, as pdoc checks its rendered snapshots. No model, no torch: a page
change shows up here as a diff to review, not as a broken browser test later."""

from __future__ import annotations

import difflib
import importlib.util
import json

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "update_golden.py"
spec = importlib.util.spec_from_file_location("update_golden", SCRIPT)
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return golden.render(tmp_path_factory.mktemp("golden") / "site")


@pytest.mark.parametrize("page", golden.PAGES)
def test_page_matches_its_golden_snapshot(rendered, page):
    expected_path = golden.EXPECTED / page
    assert expected_path.is_file(), f"no snapshot {expected_path}: run python {SCRIPT.relative_to(REPO)}"
    expected, actual = expected_path.read_bytes(), rendered[page]
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(keepends=True),
            actual.decode("utf-8", "replace").splitlines(keepends=True),
            f"golden/{page}", f"rendered/{page}"))[:60])
        pytest.fail(f"{page} differs from its golden snapshot {expected_path}. If the change "
                    f"is intended, run `python {SCRIPT.relative_to(REPO)}` and review the "
                    f"diff of tests/golden/site/.\n{diff}", pytrace=False)


def test_the_snapshots_hold_what_the_documents_say():
    """The snapshots are of this site, with its hostile names escaped: not empty pages."""
    documents = golden.load_documents()
    assert {key.prompt for key in documents} == {"fox", "code & <tags>"}
    index = (golden.EXPECTED / "index.html").read_text(encoding="utf-8")
    assert "<title>Golden &lt;report&gt;</title>" in index
    assert "code &amp; &lt;tags&gt;" in index and "&lt;script&gt;stays text" in index
    fox = (golden.EXPECTED / "prompts" / "fox" / "index.html").read_text(encoding="utf-8")
    document = next(d for key, d in documents.items() if key.prompt == "fox")
    payload = json.dumps(document["input_ids"], separators=(",", ":"))
    assert payload in fox  # the figure's data is inlined in the page
    assert "<script>" not in fox.replace('<script src="', "").replace(
        '<script type="application/json" class="figure-data">', "")
