"""The results store: a read never changes it; a corrupt entry is reported and replaced only
by the writer that recomputes it (other shards may be writing to the same store)."""

from __future__ import annotations

import logging

import pytest

from conftest import REPO
from lensreport.results.documents import loads, pack_grid
from lensreport.results.identity import SCHEMA_VERSION
from lensreport.results.store import ResultsStore


GOLDEN = REPO / "tests" / "golden" / "documents" / "tiny" / "fox.json"


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
    document = {**loads(GOLDEN.read_text(encoding="utf-8")), "cache_key": key}
    store.put(key, document)
    assert store.get(key) == document
    store.put(key, {"schema_version": SCHEMA_VERSION, "cache_key": key, "value": 1})
    with caplog.at_level(logging.WARNING, logger="lensreport"):
        assert store.get(key) is None  # neither a prompt's document nor a corpus's
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def test_an_entry_of_another_key_is_not_served(tmp_path):
    store = ResultsStore(tmp_path)
    key, other = "cd" + "1" * 62, "cd" + "2" * 62
    store.put(key, {"schema_version": SCHEMA_VERSION, "cache_key": other})
    assert store.get(key) is None


def test_documents_pack_every_number_and_read_schemas_1_and_2(tmp_path, tiny_models):
    """Schema 3 packs every numeric field (documents.pack_grid): a document reads back equal
    to what was written, tiny probabilities included (float16 would flush them to 0), the
    trajectories' at 4 decimals; the
    packed file is a fraction of the lists'; documents of schema 1 (lists) and 2 (float16
    tracked_probs) still read, in LensResult.load and the store."""
    import base64
    import json

    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lensreport
    from lensreport.results.documents import dumps, loads, read_document

    folder = tiny_models("llama")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    result = lensreport.run_lens(model, tokenizer, "The quick brown fox jumps", lens="raw",
                                 target=" dog")
    document = json.loads(json.dumps(result.document))
    # Tiny probabilities, as a rare token's are at early layers: 4 significant digits each.
    tiny = [1.234e-7, 9.999e-8, 5.678e-30, 1.401e-45, 0.0]
    document["next_token_prob"][0][:len(tiny)] = tiny
    document["target_prob"][2][:2] = [1.0, 9.999e-5]
    document["kl_to_final"][1][0] = -0.0001  # a float32 KL a hair below 0 survives too
    text = dumps(document)
    packed = json.loads(text)
    assert packed["schema_version"] == SCHEMA_VERSION == 3
    assert packed["topk_probs"]["codec"] == "prob4" and packed["tracked_probs"]["codec"] == "fixed4"
    assert packed["tracked_probs"]["order"] == "position, tracked id, layer"
    assert packed["tracked_ids"]["counts"] == [len(ids) for ids in document["tracked_ids"]]
    # The decomposition's ragged grids (each position's own attributed tokens) pack too.
    decomposition = packed["decomposition"]
    assert decomposition["attrs"]["codec"] == "fixed5"
    assert decomposition["heads"]["attrs"]["codec"] == "fixed4"
    assert len({len(ids) for ids in document["decomposition"]["token_ids"]}) > 1
    back = loads(text)
    assert back == document and dumps(back) == text
    assert back["next_token_prob"][0][:len(tiny)] == tiny
    assert len(text) < 0.6 * len(json.dumps(document, separators=(",", ":")))
    # At the documented precision: every probability is its float32 value at 4 significant
    # digits (written independently here), every nats value at 4 decimals.
    def digits(value):
        return None if value is None else float(f"{value:.4g}")
    for name in ("topk_probs", "next_token_prob", "target_prob"):
        for row in back[name]:
            for cell in row:
                for value in cell if isinstance(cell, list) else [cell]:
                    assert value == digits(value)
    for row in back["entropy"] + [row for rows in back["tracked_probs"] for row in rows]:
        assert all(value == round(value, 4) for value in row)
    # The top-k probabilities are tracked ids too, computed by another matmul: the same
    # probability, at 4 decimals there.
    for position, ids in enumerate(result.document["tracked_ids"]):
        probs = np.array(result.document["tracked_probs"][position])
        for layer, row in enumerate(result.document["topk_ids"]):
            for k, token in enumerate(row[position]):
                expected = result.document["topk_probs"][layer][position][k]
                assert abs(probs[layer, ids.index(token)] - expected) \
                    <= 5e-5 + 5e-4 * expected + 1e-6
    # Schema 1: lists everywhere; schema 2: lists, tracked_probs float16 in base64.
    plain = json.loads(json.dumps(result.document))
    old = {**plain, "schema_version": 1}
    halves = np.array([v for rows in plain["tracked_probs"] for row in rows for v in row],
                      dtype="<f2")
    schema2 = {**plain, "schema_version": 2, "tracked_probs": {
        "dtype": "float16", "order": "position, layer, tracked id",
        "base64": base64.b64encode(halves.tobytes()).decode()}}
    # Schema 3 as first written: tracked_ids as lists, tracked_probs each layer's ids together.
    from lensreport.results.documents import pack_values

    early = {**json.loads(dumps(plain)), "tracked_ids": plain["tracked_ids"], "tracked_probs": {
        "codec": "fixed4", "order": "position, layer, tracked id", "zlib": pack_values(
            [v for rows in plain["tracked_probs"] for row in rows for v in row], "fixed4")}}
    assert loads(json.dumps(early))["tracked_probs"] == loads(dumps(plain))["tracked_probs"]
    for name, saved in (("one", old), ("two", schema2)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(saved))
        loaded = lensreport.LensResult.load(path).document
        assert loaded["topk_probs"] == plain["topk_probs"]
        tracked = [v for rows in loaded["tracked_probs"] for row in rows for v in row]
        assert tracked == (halves.astype(float).tolist() if name == "two" else
                           [v for rows in plain["tracked_probs"] for row in rows for v in row])
        assert read_document(path)["entropy"] == plain["entropy"]
    store = ResultsStore(tmp_path / "store")
    store.put(document["cache_key"], document)
    assert store.get(document["cache_key"]) == document


PACKED = "expected a packed array"


@pytest.mark.parametrize("field, change, says", [
    ("topk_probs", lambda p: {**p, "zlib": p["zlib"][:-8] + "!!!!!!!!"}, PACKED),  # base64
    ("entropy", lambda p: {**p, "shape": [p["shape"][0], p["shape"][1] + 1]}, PACKED),
    ("topk_ids", lambda p: {**p, "codec": "float64"}, PACKED),
    ("next_token_rank", lambda p: {**p, "null_rows": [99]}, PACKED),
    ("tracked_probs", lambda p: {**p, "zlib": "eJwDAAAAAAE="}, PACKED),  # no values
    ("kl_to_final", lambda p: {**p, "shape": [1]}, PACKED),  # more values than the shape
    ("kl_to_final", lambda p: pack_grid([[0.5]], "fixed4"), "expected a list of"),
    ("decomposition.attrs", lambda p: {**p, "shape": [p["shape"][0], 1, p["shape"][2]]},
     "expected packed arrays"),
])
def test_bad_packed_fields_are_one_line(tmp_path, tiny_models, field, change, says):
    """A packed field that is not what the writer writes (bad base64 or deflate, a shape its
    values do not fill, an unknown codec, a row number out of range) is refused by
    `results:`'s reader with one line naming the field."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lensreport
    from lensreport.errors import LensReportError
    from lensreport.results.documents import dumps, read_document

    folder = tiny_models("llama")
    result = lensreport.run_lens(AutoModelForCausalLM.from_pretrained(folder),
                                 AutoTokenizer.from_pretrained(folder), "One two three")
    saved = json.loads(dumps(result.document))
    holder = saved
    for name in field.split(".")[:-1]:
        holder = holder[name]
    holder[field.split(".")[-1]] = change(holder[field.split(".")[-1]])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(LensReportError) as error:
        read_document(path)
    message = str(error.value)
    assert f"{field.split('.')[0]}: {says}" in message and "\n" not in message
    assert str(path) in message


def test_prob4_keeps_4_significant_digits_down_to_float32s_smallest():
    """Every probability at 4 significant digits, 1 down to 1.4e-45 (float32's smallest), and
    0: packed and unpacked it is the same double as its 4-digit decimal read by Python."""
    import random

    from lensreport.results.documents import pack_values, unpack_values

    rng = random.Random(0)
    values = [float(f"{10 ** rng.uniform(-45, 0):.4g}") for _ in range(5000)]
    values += [0.0, 1.0, None, 1.401e-45, 9.999e-20, 1e-19, 1.234e-23, 5.678e-8, 0.9999]
    assert unpack_values(pack_values(values, "prob4"), "prob4", len(values)) == values
    fixed = [-0.0001, 0.0, 12.4567, 300.0, None]
    assert unpack_values(pack_values(fixed, "fixed4"), "fixed4", len(fixed)) == fixed
    logits = [-0.00001, 0.0, -12.34567, 4321.5, None]
    assert unpack_values(pack_values(logits, "fixed5"), "fixed5", len(logits)) == logits
    nats = [0.0, 0.57, 10.83, None]  # a first view's entropy (2 decimals)
    assert unpack_values(pack_values(nats, "fixed2"), "fixed2", len(nats)) == nats
    assert unpack_values(pack_values([0.5749], "fixed2"), "fixed2", 1) == [0.57]
