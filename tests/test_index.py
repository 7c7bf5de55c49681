"""Gallery indexes: exact flat search, stated recall, add/remove, atomic writes, bad input,
Milvus Lite against faiss, and Market metrics from an index's top-K."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reidcli import api
from reidcli.errors import GalleryIndexError
from reidcli.index import container, segments, store
from reidcli.index.gallery import prepare_vectors
from reidcli.index.inputs import load_rows
from reidcli.index.store import open_gallery
from reidcli.index.synthetic import clustered
from reidcli.metrics.evaluate import evaluate_features
from reidcli.metrics.features import load_features
from tests.conftest import reid

pytest.importorskip("faiss")

DIM, IDS = 32, 60


def features_file(path: Path, rows: int, stream: int, prefix: str, labels: bool = True) -> Path:
    data = clustered(rows, IDS, dim=DIM, seed=3, stream=stream)
    arrays = {"features": data.features,
              "paths": np.char.add(f"{prefix}/", np.arange(rows).astype(str))}  # fmt: skip
    if labels:
        arrays |= {"pids": data.pids, "camids": data.camids}
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


def eval_file(path: Path, gallery: int = 1500, queries: int = 200) -> Path:
    g = clustered(gallery, IDS, dim=DIM, seed=3, stream=1)
    q = clustered(queries, IDS, dim=DIM, seed=3, stream=2)
    with path.open("wb") as handle:
        np.savez(handle, query_features=q.features, gallery_features=g.features,
                 query_pids=q.pids, gallery_pids=g.pids, query_camids=q.camids,
                 gallery_camids=g.camids,
                 query_paths=np.char.add("q/", np.arange(queries).astype(str)),
                 gallery_paths=np.char.add("g/", np.arange(gallery).astype(str)))  # fmt: skip
    return path


def brute_force_ranking(queries, gallery, metric, keep=None):
    """Row numbers of the gallery by float64 distance of the stored vectors, ties by row."""
    q = prepare_vectors(queries, metric).astype(np.float64)
    g = prepare_vectors(gallery, metric).astype(np.float64)
    dist = 1.0 - q @ g.T if metric == "cosine" else ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(g)), dist.shape), dist), axis=1)
    if keep is not None:
        return [row[keep(i, row)] for i, row in enumerate(order)]
    return list(order)


def row_numbers(result) -> np.ndarray:
    doc = result if isinstance(result, dict) else result.to_json()
    return np.array([[int(h["path"].split("/")[1]) for h in e["hits"]] for e in doc["results"]])


def sha(path: Path) -> str:
    """A digest of an index folder: every file's name and bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def segment_files(index: Path) -> list[Path]:
    return sorted(index.glob("seg-*.rseg"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("index")
    return {
        "gallery": features_file(base / "gallery.npz", 1500, 1, "g"),
        "queries": features_file(base / "queries.npz", 100, 2, "q"),
        "more": features_file(base / "more.npz", 40, 5, "m"),
        "eval": eval_file(base / "eval.npz"),
    }


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_search_is_the_brute_force_ranking(files, tmp_path, metric):
    gallery, _ = load_rows(files["gallery"], "gallery")
    queries, _ = load_rows(files["queries"], "query")
    if metric == "euclidean":  # rows of several lengths: not a cosine ranking in disguise
        scale = np.random.default_rng(0).uniform(0.5, 2.0, (len(gallery), 1)).astype(np.float32)
        path = tmp_path / "scaled.npz"
        np.savez(path, features=gallery.features * scale, paths=gallery.paths.astype(str),
                 pids=gallery.pids, camids=gallery.camids)  # fmt: skip
        gallery, _ = load_rows(path, "gallery")
    else:
        path = files["gallery"]
    info = api.index_build(path, tmp_path / "flat.idx", metric=metric).to_json()
    assert info["kind"] == "flat" and info["recall"] is None and info["count"] == 1500
    found = api.search(tmp_path / "flat.idx", files["queries"], topk=25).to_json()
    expected = brute_force_ranking(queries.features, gallery.features, metric)
    np.testing.assert_array_equal(row_numbers(found), np.array(expected)[:, :25])
    # the distances are reid eval's: 1 - cos, or the squared euclidean distance
    dists = np.array([[h["distance"] for h in e["hits"]] for e in found["results"]])
    q = prepare_vectors(queries.features, metric).astype(np.float64)
    g = prepare_vectors(gallery.features, metric).astype(np.float64)[row_numbers(found)]
    want = (
        1 - np.einsum("qd,qkd->qk", q, g) if metric == "cosine" else ((g - q[:, None]) ** 2).sum(-1)
    )
    np.testing.assert_allclose(dists, want, rtol=0, atol=1e-12)

    # the Market rule drops the query's identity from its own camera; K hits remain
    excluded = api.search(tmp_path / "flat.idx", files["queries"], topk=25,
                          exclude_same_camera=True).to_json()  # fmt: skip
    gp, gc = gallery.pids, gallery.camids

    def keep(i, row):
        return ~((gp[row] == queries.pids[i]) & (gc[row] == queries.camids[i]))

    expected = brute_force_ranking(queries.features, gallery.features, metric, keep)
    np.testing.assert_array_equal(row_numbers(excluded), np.array([e[:25] for e in expected]))


def test_unknown_identity_queries_drop_their_whole_camera(files, tmp_path):
    api.index_build(files["gallery"], tmp_path / "flat.idx")
    queries, _ = load_rows(files["queries"], "query")
    path = tmp_path / "cams_only.npz"
    np.savez(path, features=queries.features, paths=queries.paths.astype(str),
             camids=queries.camids)  # fmt: skip
    result = api.search(tmp_path / "flat.idx", path, topk=30, exclude_same_camera=True).to_json()
    for entry, cam in zip(result["results"], queries.camids, strict=True):
        assert len(entry["hits"]) == 30 and all(h["camid"] != cam for h in entry["hits"])
    no_cams = tmp_path / "no_cams.npz"
    np.savez(no_cams, features=queries.features, paths=queries.paths.astype(str))
    code = reid("search", str(tmp_path / "flat.idx"), str(no_cams), "--exclude-same-camera")
    assert code.returncode == 1 and "camid" in code.stderr


@pytest.mark.parametrize(
    ("kind", "options"),
    [("hnsw", {"hnsw_m": 16, "ef_construction": 40}), ("ivfpq", {"nlist": 32, "pq_m": 8})],
)
def test_approximate_indexes_reach_their_stated_recall(files, tmp_path, kind, options):
    info = api.index_build(
        files["gallery"], tmp_path / f"{kind}.idx", kind=kind, **options
    ).to_json()
    stated = info["recall"]["recall_at_10"]
    assert info["recall"]["sample"] == 1000 and stated >= 0.9, info["recall"]
    # fresh queries (another draw of the same identities) against brute force
    gallery, _ = load_rows(files["gallery"], "gallery")
    queries, _ = load_rows(files["queries"], "query")
    truth = np.array(brute_force_ranking(queries.features, gallery.features, "cosine"))[:, :10]
    found = row_numbers(api.search(tmp_path / f"{kind}.idx", files["queries"], topk=10))
    recall = np.mean([np.intersect1d(t, f).size / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= stated - 0.05, (recall, stated)
    # the recall and the parameters are stored with the index
    assert api.index_info(tmp_path / f"{kind}.idx").to_json()["recall"] == info["recall"]
    if kind == "ivfpq":
        # searching every list can only find more of the true neighbours
        wide = row_numbers(api.search(tmp_path / "ivfpq.idx", files["queries"], topk=10, nprobe=32))
        wider = np.mean([np.intersect1d(t, f).size / 10 for t, f in zip(truth, wide, strict=True)])
        assert wider >= recall and wider >= 0.97


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_and_remove_round_trip(files, tmp_path, kind):
    index = tmp_path / f"{kind}.idx"
    options = {"nlist": 16, "pq_m": 8} if kind == "ivfpq" else {}
    api.index_build(files["gallery"], index, kind=kind, **options)
    before = api.search(index, files["queries"], topk=10).to_json()
    added = api.index_add(index, files["more"]).to_json()
    assert (added["added"], added["count"]) == (40, 1540) and added["first_id"] == 1500
    # every added crop is found as its own nearest neighbour
    own = api.search(index, files["more"], topk=1).to_json()
    assert [e["hits"][0]["path"] for e in own["results"]] == [e["path"] for e in own["results"]]
    listing = tmp_path / "erase.txt"
    listing.write_text("\n".join(e["path"] for e in own["results"]) + "\nnot/in/the/index\n")
    with pytest.raises(GalleryIndexError, match=r"1 of the 41 paths .* nothing removed"):
        api.index_remove(index, paths_file=listing)  # every listed path, or none
    assert api.index_info(index).count == 1540
    listing.write_text("\n".join(e["path"] for e in own["results"]) + "\n")
    removed = api.index_remove(index, paths_file=listing).to_json()
    assert {k: removed[k] for k in ("index", "removed", "verified", "before", "count")} == {
        "index": str(index),
        "removed": 40,
        "verified": True,
        "before": 1540,
        "count": 1500,
    }
    # the added segment, all of it deleted, was dropped on its own (over max_deleted)
    assert removed["compacted"] and len(segment_files(index)) == 1
    after = api.search(index, files["queries"], topk=10).to_json()
    if kind == "hnsw":  # a rebuilt graph: the same neighbours, up to the approximation
        same = np.mean(row_numbers(after) == row_numbers(before))
        assert same >= 0.9
    else:
        assert after["results"] == before["results"]
    # right to erasure: a person's crops leave the index, and no search returns them
    pid = int(load_rows(files["gallery"], "gallery")[0].pids[0])
    gone = api.index_remove(index, pid=pid).to_json()
    assert gone["removed"] == 25 and gone["count"] == 1475
    gallery = open_gallery(index)
    assert pid not in gallery.label_table()[0]
    hits = api.search(index, files["queries"], topk=50).to_json()
    assert all(h["pid"] != pid for e in hits["results"] for h in e["hits"])
    with pytest.raises(GalleryIndexError, match=f"no row of person {pid}"):
        api.index_remove(index, pid=pid)


def test_interrupted_writes_leave_the_index_intact(files, tmp_path, monkeypatch):
    index = tmp_path / "flat.idx"
    api.index_build(files["gallery"], index)
    digest = sha(index)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(container.Writer, "finish", interrupted)  # while writing the segment
    with pytest.raises(KeyboardInterrupt):
        api.index_add(index, files["more"])
    assert sha(index) == digest  # the segment's temporary file is gone too
    monkeypatch.undo()
    monkeypatch.setattr(segments, "write_manifest", interrupted)  # after the deletion list
    with pytest.raises(KeyboardInterrupt):
        api.index_remove(index, pid=0)
    monkeypatch.undo()
    left = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")
    assert left == ["flat.idx"] and api.index_info(index).count == 1500
    # the next writer removes the deletion list that no manifest names
    with store.writing(index):
        pass
    assert sha(index) == digest


def test_bad_input_is_an_error_and_leaves_the_index(files, tmp_path):
    index = tmp_path / "g.idx"
    assert reid("index", "build", str(files["gallery"]), "--out", str(index)).returncode == 0
    digest = sha(index)
    wide = tmp_path / "wide.npz"
    np.savez(wide, features=np.ones((3, DIM * 2), np.float32), paths=np.array(["a", "b", "c"]))
    empty = tmp_path / "empty.npz"
    np.savez(empty, features=np.zeros((0, DIM), np.float32), paths=np.array([], dtype=str))
    other_metric = tmp_path / "euclidean.npz"
    np.savez(other_metric, features=np.ones((2, DIM), np.float32), paths=np.array(["a", "b"]),
             distance=np.asarray("euclidean"))  # fmt: skip
    corrupt = tmp_path / "corrupt.idx"
    shutil.copytree(index, corrupt)
    damaged = segment_files(corrupt)[0]
    damaged.write_bytes(damaged.read_bytes()[:-100])
    garbage = tmp_path / "garbage.idx"
    garbage.write_bytes(b"not an index at all" * 10)
    cases = [
        (("index", "add", str(index), str(wide)), f"{DIM * 2}-d features"),
        (("index", "add", str(index), str(empty)), "non-empty"),
        (("index", "add", str(index), str(other_metric)), "euclidean"),
        (("search", str(index), str(wide)), f"index holds {DIM}-d"),
        (("index", "add", str(tmp_path / "missing.idx"), str(files["more"])), "no such index"),
        (("search", str(corrupt), str(files["queries"])), "not a readable reid index"),
        (("index", "info", str(garbage)), "not a readable reid index"),
        (("index", "build", str(empty), "--out", str(tmp_path / "new.idx")), "non-empty"),
    ]
    for args, message in cases:
        done = reid(*args)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
    assert sha(index) == digest and not (tmp_path / "new.idx").exists()
    usage = [
        (("index", "build", str(files["gallery"]), "--out", str(tmp_path / "x.idx"), "--type",
          "flat", "--nlist", "8"), "--nlist"),
        (("index", "build", str(files["gallery"]), "--out", str(tmp_path / "x.idx"), "--type",
          "ivfpq", "--pq-m", "5"), "divide"),
        (("search", str(index), str(files["queries"]), "--nprobe", "4"), "ivfpq"),
        (("index", "remove", str(index)), "--paths or --pid"),
        (("search", str(index), str(files["queries"]), "--out", str(tmp_path / "r.txt")), ".csv"),
        (("index", "build", str(files["more"]), "--out", str(index)), "exists"),
    ]  # fmt: skip
    for args, message in usage:
        done = reid(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_container_detects_damage(files, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(files["gallery"], index)
    segment = segment_files(index)[0]
    data = bytearray(segment.read_bytes())
    data[-20] ^= 0xFF  # inside the header length / trailer
    segment.write_bytes(bytes(data))
    with pytest.raises(GalleryIndexError, match="not a readable reid index"):
        open_gallery(index)
    (index / "MANIFEST").write_text("{not json")
    with pytest.raises(GalleryIndexError, match="not a readable reid index"):
        open_gallery(index)


def test_search_cli_json_and_csv(files, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(files["gallery"], index)
    done = reid("search", str(index), str(files["queries"]), "--topk", "3", "--json",
                "--out", str(tmp_path / "hits.csv"), "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert len(doc) == 100 and doc[0]["path"] == "q/0" and len(doc[0]["hits"]) == 3
    assert set(doc[0]) == {"path", "pid", "camid", "hits"}
    assert set(doc[0]["hits"][0]) == {"path", "pid", "camid", "distance"}
    lines = (tmp_path / "hits.csv").read_text().splitlines()
    assert lines[0] == "query,rank,path,pid,camid,distance" and len(lines) == 301
    first = doc[0]["hits"][0]
    assert lines[1].split(",")[:5] == ["q/0", "1", first["path"], str(first["pid"]),
                                       str(first["camid"])]  # fmt: skip
    assert float(lines[1].split(",")[5]) == first["distance"]


def test_eval_with_an_exhaustive_flat_index_equals_the_dense_evaluation(files, tmp_path):
    index = tmp_path / "g.idx"
    done = reid("index", "build", str(files["eval"]), "--out", str(index))  # the gallery side
    assert done.returncode == 0, done.stderr
    exact = evaluate_features(load_features(files["eval"]))
    full = api.evaluate(features=files["eval"], index=index, index_topk=1500).to_json()
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        assert full[key] == pytest.approx(exact[key], abs=1e-12), key
        assert full["exact"][key] == exact[key]
    assert full["index"]["matches_found"] == full["index"]["matches"]
    # a short top-K: ranks within K unchanged, mAP and mINP lower bounds (missed matches last)
    short = api.evaluate(features=files["eval"], index=index, index_topk=10).to_json()
    assert short["rank1"] == pytest.approx(exact["rank1"], abs=1e-12)
    assert short["rank10"] == pytest.approx(exact["rank10"], abs=1e-12)
    assert short["mAP"] < exact["mAP"] and short["mINP"] <= exact["mINP"]
    assert short["index"]["matches_found"] < short["index"]["matches"]
    cli = reid("eval", "--features", str(files["eval"]), "--index", str(index), "--json", "-q")
    assert cli.returncode == 0, cli.stderr
    doc = json.loads(cli.stdout)
    assert doc["index"]["topk"] == 100 and doc["exact"]["mAP"] == exact["mAP"]
    refused = reid("eval", "--features", str(files["eval"]), "--index", str(index), "--rerank")
    assert refused.returncode == 2 and "re-ranking" in refused.stderr
    unlabelled = tmp_path / "unlabelled.idx"
    api.index_build(features_file(tmp_path / "u.npz", 300, 1, "g", labels=False), unlabelled)
    missing = reid("eval", "--features", str(files["eval"]), "--index", str(unlabelled))
    assert missing.returncode == 1 and "without a person id" in missing.stderr


def test_milvus_lite_returns_the_faiss_flat_hits(files, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    uri = str(tmp_path / "milvus.db")
    api.index_build(files["gallery"], tmp_path / "flat.idx")
    built = api.index_build(files["gallery"], "gallery", backend="milvus", uri=uri).to_json()
    assert built["count"] == 1500 and built["index"] == f"{uri}#gallery"
    for exclude in (False, True):
        faiss_hits = api.search(tmp_path / "flat.idx", files["queries"], topk=10,
                                exclude_same_camera=exclude).to_json()  # fmt: skip
        milvus_hits = api.search("gallery", files["queries"], topk=10, backend="milvus",
                                 uri=uri, exclude_same_camera=exclude).to_json()  # fmt: skip
        assert row_numbers(milvus_hits).tolist() == row_numbers(faiss_hits).tolist()
        for a, b in zip(milvus_hits["results"], faiss_hits["results"], strict=True):
            np.testing.assert_allclose([h["distance"] for h in a["hits"]],
                                       [h["distance"] for h in b["hits"]], atol=1e-12)  # fmt: skip
    # the same commands grow and prune it
    added = reid("index", "add", "gallery", str(files["more"]), "--backend", "milvus", "--uri", uri)
    assert added.returncode == 0, added.stderr
    again = reid("index", "add", "gallery", str(files["more"]), "--backend", "milvus", "--uri", uri)
    assert again.returncode == 1 and "40 of the 40 paths are already in" in again.stderr
    gone = api.index_remove("gallery", pid=0, backend="milvus", uri=uri).to_json()
    assert gone["verified"] and gone["count"] == 1540 - gone["removed"] and gone["removed"] > 0
    hits = api.search("gallery", files["queries"], topk=50, backend="milvus", uri=uri).to_json()
    assert all(h["pid"] != 0 for e in hits["results"] for h in e["hits"])
    assert api.index_info("gallery", backend="milvus", uri=uri).count == gone["count"]
    wrong = reid("search", "gallery", str(files["queries"]), "--uri", uri)
    assert wrong.returncode == 2 and "--backend milvus" in wrong.stderr


def test_edges_empty_gallery_short_answers_and_refusals(files, tmp_path):
    small = features_file(tmp_path / "small.npz", 300, 1, "s")
    # an approximate index still returns K hits when K reaches the gallery's size
    api.index_build(small, tmp_path / "h.idx", kind="hnsw", hnsw_m=4, ef_construction=8,
                    ef_search=4)  # fmt: skip
    api.index_build(small, tmp_path / "p.idx", kind="ivfpq", nlist=8, pq_m=8, nprobe=1)
    for name in ("h.idx", "p.idx"):
        everything = api.search(tmp_path / name, files["queries"], topk=300).to_json()
        assert {len(e["hits"]) for e in everything["results"]} == {300}, name
        kept = api.search(
            tmp_path / name, files["queries"], topk=200, exclude_same_camera=True
        ).to_json()
        assert {len(e["hits"]) for e in kept["results"]} == {200}, name
    # an index emptied by removals answers with no hits
    api.index_build(small, tmp_path / "f.idx")
    for pid in np.unique(load_rows(small, "gallery")[0].pids):
        api.index_remove(tmp_path / "f.idx", pid=int(pid))
    assert api.index_info(tmp_path / "f.idx").count == 0
    empty = api.search(tmp_path / "f.idx", files["queries"], topk=5).to_json()
    assert all(e["hits"] == [] for e in empty["results"])
    # refusals
    done = reid("index", "remove", str(tmp_path / "h.idx"), "--pid", "-1")
    assert done.returncode == 2 and "person id" in done.stderr
    done = reid("index", "remove", str(tmp_path / "h.idx"), "--pid", "99999")
    assert done.returncode == 1 and "no row of person 99999" in done.stderr
    done = reid("search", str(tmp_path / "p.idx"), str(files["queries"]), "--nprobe", "9")
    assert done.returncode == 2 and "exceeds the index's 8 lists" in done.stderr
    done = reid("eval", "--features", str(files["eval"]), "--nprobe", "4")
    assert done.returncode == 2 and "apply to --index" in done.stderr


def test_the_metric_follows_the_features_file(tmp_path):
    data = clustered(400, 20, dim=DIM, seed=3)
    path = tmp_path / "euclidean.npz"
    np.savez(path, features=data.features * 3, paths=np.arange(400).astype(str),
             distance=np.asarray("euclidean"))  # fmt: skip
    assert api.index_build(path, tmp_path / "e.idx").metric == "euclidean"
    with pytest.raises(GalleryIndexError, match="euclidean distance, not cosine"):
        api.index_build(path, tmp_path / "c.idx", metric="cosine")


def test_a_short_hnsw_answer_falls_back_to_ranking_every_row(files, tmp_path, monkeypatch):
    small = features_file(tmp_path / "small.npz", 300, 1, "s")
    api.index_build(small, tmp_path / "h.idx", kind="hnsw")
    gallery = open_gallery(tmp_path / "h.idx")
    answer = gallery._candidates

    def unreachable(queries, k, params):  # as if half the graph could not be reached
        ids, dist = answer(queries, k, params)
        ids[:, k // 2 :] = -1
        return ids, dist

    monkeypatch.setattr(gallery, "_candidates", unreachable)
    queries, _ = load_rows(files["queries"], "query")
    found = gallery.search(queries.features, 40).ids
    rows, _ = load_rows(small, "gallery")
    expected = np.array(brute_force_ranking(queries.features, rows.features, "cosine"))[:, :40]
    np.testing.assert_array_equal(found, expected)  # row ids are the file's row numbers


def test_an_open_index_keeps_reading_its_own_file_after_a_writer_replaces_it(files, tmp_path):
    index = tmp_path / "p.idx"
    api.index_build(files["gallery"], index, kind="ivfpq", nlist=16, pq_m=8)
    reader = open_gallery(index)
    queries, _ = load_rows(files["queries"], "query")
    before = reader.search(queries.features, 10)
    api.index_add(index, files["more"])  # renames a new file over the one `reader` opened
    removed = api.index_remove(index, pid=0).to_json()["removed"]
    after = reader.search(queries.features, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.distances, before.distances)
    assert open_gallery(index).count == 1540 - removed and removed > 0
