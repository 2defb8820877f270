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
