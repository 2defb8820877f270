"""Regenerate the golden pages of tests/golden/ (as pdoc keeps its rendered snapshots).

tests/golden/ holds a tiny site's manifest (prompts.yaml), its canned results documents
(documents/MODEL/PROMPT.json) and the pages rendered from them (site/…), which
tests/test_golden.py compares byte for byte with what the templates render now.

    python scripts/update_golden.py              # re-render the expected pages
    python scripts/update_golden.py --documents  # first recompute the canned documents
                                                 # from a tiny random model (needs torch)

Run it after an intended change of the templates (or the page code), then review the diff
of tests/golden/site/ as you would review the change itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
MANIFEST = GOLDEN / "prompts.yaml"
DOCUMENTS = GOLDEN / "documents"
EXPECTED = GOLDEN / "site"
# The pages kept as snapshots: the index and one prompt page (its figure inlined).
PAGES = ("index.html", "prompts/fox/index.html")


def load_documents() -> dict[Any, dict[str, Any]]:
    """The canned documents, keyed as the build keys them: (model, prompt, lens)."""
    from lensreport.plan import PromptKey
    from lensreport.results.documents import loads

    documents = {}
    for path in sorted(DOCUMENTS.glob("*/*.json")):
        document = loads(path.read_text(encoding="utf-8"))
        key = PromptKey(document["model"]["name"], document["prompt"]["name"],
                        document["lens"]["kind"])
        documents[key] = document
    return documents


def render(out: Path) -> dict[str, bytes]:
    """Render the golden site into ``out`` (an empty folder); the snapshot pages' bytes."""
    from lensreport.manifest import load_manifest
    from lensreport.site.pages import render_site

    render_site(load_manifest(MANIFEST), load_documents(), out)
    return {page: (out / page).read_bytes() for page in PAGES}


def recompute_documents() -> None:
    """The canned documents from a tiny random GPT-2 (tests/tiny.py), built through the
    CLI; the model's folder is replaced by the manifest's reference so nothing points at
    a temporary path."""
    sys.path.insert(0, str(REPO / "tests"))
    import tiny
    from lensreport.cli import main

    manifest_text = MANIFEST.read_text(encoding="utf-8")
    reference = next(line.split(":", 1)[1].strip() for line in manifest_text.splitlines()
                     if line.strip().startswith("model:"))
    with tempfile.TemporaryDirectory() as work:
        folder = tiny.save_tiny_model("gpt2", Path(work) / "model", tiny.byte_level_tokenizer())
        manifest = Path(work) / "prompts.yaml"
        manifest.write_text(manifest_text.replace(reference, str(folder)), encoding="utf-8")
        try:
            main(["build", str(manifest), "-q"], standalone_mode=False)
        except SystemExit as exit:
            if exit.code:
                raise
        shutil.rmtree(DOCUMENTS, ignore_errors=True)
        for path in sorted((Path(work) / "site" / "data").glob("*/*.json")):
            document = json.loads(path.read_text(encoding="utf-8"))
            document["model"]["reference"] = reference
            target = DOCUMENTS / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n",
                              encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", action="store_true",
                        help="recompute the canned documents first (a tiny random model)")
    args = parser.parse_args()
    if args.documents:
        recompute_documents()
    with tempfile.TemporaryDirectory() as out:
        pages = render(Path(out) / "site")
    shutil.rmtree(EXPECTED, ignore_errors=True)
    for page, data in pages.items():
        target = EXPECTED / page
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"wrote {target.relative_to(REPO)} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
