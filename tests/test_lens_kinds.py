"""A new lens kind is one class and one registration: defined here, in a test file, it works
in manifests, the engine, corpus curves and pages with no change anywhere else."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import tiny
from conftest import write_manifest
from lensreport.lens import kinds
from lensreport.lens.kinds import Lens, LogitLens
from lensreport.lens.tiled import lens_inputs, lens_statistics
from lensreport.results.documents import loads


@dataclass(frozen=True)
class ScaledLens(Lens):
    """Reads final_norm(2 h): for a norm without scale invariance (LayerNorm with bias, or an
    epsilon) the numbers differ from the logit lens's."""

    name = "scaled"
    label = "scaled lens"
    line_dash = "longdash"

    def translate(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * 2


@pytest.fixture
def scaled(monkeypatch):
    monkeypatch.setitem(kinds._REGISTRY, "scaled", ScaledLens)
    return ScaledLens


def test_a_lens_defined_in_a_test_file_builds_pages_and_curves(scaled, tmp_path, tiny_models,
                                                               weights_cache):
    from lensreport.commands.build import run_build
    from lensreport.manifest import load_manifest

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"The quick brown fox jumps over the lazy dog {i}."
                                  for i in range(6)), encoding="utf-8")
    manifest = load_manifest(write_manifest(tmp_path, f"""
        lens: {{kinds: [logit, scaled], top_k: 3}}
        models:
          - {{name: tiny, model: {tiny_models("gpt2")}}}
        prompts:
          - {{name: fox, text: "The quick brown fox", target: " fox"}}
        corpora:
          - {{name: docs, path: corpus.txt, max_tokens: 60, context: 16}}
    """))
    run_build(manifest, tmp_path / "site")
    site = tmp_path / "site"
    scaled_document = loads((site / "data" / "tiny" / "fox.scaled.json").read_text())
    logit_document = loads((site / "data" / "tiny" / "fox.json").read_text())
    assert scaled_document["lens"]["kind"] == "scaled"

    # The numbers are the tiled pass's on 2 h, computed here without the build.
    session = tiny.open_session(manifest)
    encoded = tiny.encode(session, manifest.prompts[0])
    [(_, hidden, last)] = session.hidden_states([encoded.input_ids])
    expected = lens_statistics(lens_inputs(hidden, last, session.head, ScaledLens()),
                               session.head, torch.tensor(encoded.input_ids), 3,
                               encoded.target_id)
    assert torch.allclose(torch.tensor(scaled_document["entropy"]),
                          torch.tensor(expected.entropy), atol=1e-3)
    assert scaled_document["entropy"][0] != logit_document["entropy"][0]  # it is another lens
    assert scaled_document["entropy"][-1] == logit_document["entropy"][-1]  # the model's row

    page = (site / "prompts" / "fox" / "index.html").read_text()
    assert '<option value="1">scaled lens</option>' in page
    assert '"dash":"longdash"' in page  # its line style reaches the comparison chart
    curves = loads((site / "data" / "corpora" / "docs" / "tiny.scaled.json").read_text())
    assert curves["lens"]["kind"] == "scaled" and len(curves["cross_entropy"]) == 4
    corpus_page = (site / "corpora" / "docs" / "index.html").read_text()
    assert "scaled lens" in corpus_page


def test_an_unregistered_kind_is_a_manifest_error(tmp_path, tiny_models):
    from lensreport.errors import ManifestErrors
    from lensreport.manifest import load_manifest

    path = write_manifest(tmp_path, f"""
        lens: {{kinds: [logit, scaled]}}
        models:
          - {{name: tiny, model: {tiny_models("gpt2")}}}
        prompts:
          - {{name: fox, text: "The quick brown fox"}}
    """)
    with pytest.raises(ManifestErrors, match=r"prompts.yaml:1: lens.kinds: unknown lens kind "
                                             r"'scaled'; known: logit, raw, tuned"):
        load_manifest(path)


def test_lenses_are_equal_by_content():
    assert LogitLens() == LogitLens() and hash(LogitLens()) == hash(LogitLens())
    assert ScaledLens() != LogitLens()
