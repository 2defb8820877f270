"""The results store: a read never changes it; a corrupt entry is reported and replaced only
by the writer that recomputes it (other shards may be writing to the same store)."""

from __future__ import annotations

import logging

import pytest

from lensreport.results.identity import SCHEMA_VERSION
from lensreport.results.store import ResultsStore


@pytest.mark.parametrize("url", [False, True])
def test_a_corrupt_entry_is_a_warning_and_stays_until_rewritten(tmp_path, caplog, url):
    location = f"file://{tmp_path / 'store'}" if url else tmp_path / "store"
    store = ResultsStore(location)
    key = "ab" + "0" * 62
    path = tmp_path / "store" / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"truncated": ')
    with caplog.at_level(logging.WARNING, logger="lensreport"):
        assert store.get(key) is None
    assert any("unreadable" in record.getMessage() for record in caplog.records)
    assert path.read_bytes() == b'{"truncated": '  # the read deleted nothing
    document = {"schema_version": SCHEMA_VERSION, "cache_key": key, "value": 1}
    store.put(key, document)
    assert store.get(key) == document
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def test_an_entry_of_another_key_is_not_served(tmp_path):
    store = ResultsStore(tmp_path)
    key, other = "cd" + "1" * 62, "cd" + "2" * 62
    store.put(key, {"schema_version": SCHEMA_VERSION, "cache_key": other})
    assert store.get(key) is None


def test_documents_keep_tracked_probs_as_float16_and_read_schema_1(tmp_path, tiny_models):
    """Schema 2 stores tracked_probs as one float16 array: a document reads back equal to
    what was written (so a cached build renders what a fresh one does), at most 2.5e-4 from
    the float32 probabilities, and a schema-1 document (lists) still reads and renders."""
    import json

    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lensreport
    from lensreport.results.documents import dumps, loads, read_document

    folder = tiny_models("llama")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    result = lensreport.run_lens(model, tokenizer, "The quick brown fox jumps", lens="raw")
    document = result.document
    text = dumps(document)
    packed = json.loads(text)
    assert packed["schema_version"] == SCHEMA_VERSION == 2
    assert packed["tracked_probs"]["dtype"] == "float16"
    assert loads(text) == json.loads(json.dumps(document)) and dumps(loads(text)) == text
    assert len(text) < 0.7 * len(json.dumps(document, separators=(",", ":")))
    # Against the float32 numbers: the top-k probabilities are tracked ids too.
    for position, ids in enumerate(document["tracked_ids"]):
        probs = np.array(document["tracked_probs"][position])
        for layer, row in enumerate(document["topk_ids"]):
            for k, token in enumerate(row[position]):
                column = ids.index(token)
                assert abs(probs[layer, column] - document["topk_probs"][layer][position][k]) \
                    <= 2.5e-4 + 1e-4 * document["topk_probs"][layer][position][k]
    old = {**json.loads(json.dumps(document)), "schema_version": 1}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert read_document(path)["tracked_probs"] == old["tracked_probs"]
    store = ResultsStore(tmp_path / "store")
    store.put(document["cache_key"], document)
    assert store.get(document["cache_key"]) == loads(text)
