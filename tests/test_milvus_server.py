"""The Milvus backend against a Milvus server (standalone or a cluster's proxy): the faiss flat
hits, adds (duplicates refused), removals and info, as with Milvus Lite in test_index.py.

Runs when REID_MILVUS_URI names a server (http://host:19530); skipped otherwise."""

import os
import time

import numpy as np
import pytest

from reidcli import api
from reidcli.errors import GalleryIndexError
from tests.test_index import features_file, row_numbers

URI = os.environ.get("REID_MILVUS_URI")
pytestmark = pytest.mark.skipif(
    not URI,
    reason="REID_MILVUS_URI is not set: start a Milvus server (README, 'Running against a "
    "server') and set it to run the server test",
)


def test_a_milvus_server_returns_the_faiss_flat_hits(tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("faiss")
    from reidcli.index.milvus_backend import BUILDING_SUFFIX, META_SUFFIX, connect

    gallery = features_file(tmp_path / "gallery.npz", 1500, 1, "g")
    queries = features_file(tmp_path / "queries.npz", 100, 2, "q")
    more = features_file(tmp_path / "more.npz", 40, 5, "m")
    name = f"reid_test_{os.getpid()}_{int(time.time())}"
    at = {"backend": "milvus", "uri": URI}
    try:
        api.index_build(gallery, tmp_path / "flat.idx")
        built = api.index_build(gallery, name, **at).to_json()
        assert built["count"] == 1500 and built["index"] == f"{URI}#{name}"
        for exclude in (False, True):
            expected = api.search(tmp_path / "flat.idx", queries, topk=10,
                                  exclude_same_camera=exclude).to_json()  # fmt: skip
            found = api.search(name, queries, topk=10, exclude_same_camera=exclude, **at)
            found = found.to_json()
            assert row_numbers(found).tolist() == row_numbers(expected).tolist()
            for a, b in zip(found["results"], expected["results"], strict=True):
                got, want = ([h["distance"] for h in e["hits"]] for e in (a, b))
                np.testing.assert_allclose(got, want, atol=1e-6)
        assert api.index_add(name, more, **at).count == 1540
        with pytest.raises(GalleryIndexError, match="40 of the 40 paths are already in"):
            api.index_add(name, more, **at)
        gone = api.index_remove(name, pid=0, **at).to_json()
        assert gone["verified"] and gone["removed"] > 0
        assert gone["count"] == 1540 - gone["removed"]
        hits = api.search(name, queries, topk=50, **at).to_json()
        assert all(h["pid"] != 0 for e in hits["results"] for h in e["hits"])
        assert api.index_info(name, **at).count == gone["count"]
    finally:
        client = connect(URI)
        for collection in (name, name + META_SUFFIX, name + BUILDING_SUFFIX,
                           name + BUILDING_SUFFIX + META_SUFFIX):  # fmt: skip
            if client.has_collection(collection):
                client.drop_collection(collection)
