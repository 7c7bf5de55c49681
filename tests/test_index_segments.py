"""Index folders of segments: appends that equal one build, no duplicates, deletion lists,
purge, compaction (asked for and on its own), the stale-quantizer note and rebuild, the
earlier single-file format, and writers killed at every step."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidcli import api
from reidcli.errors import GalleryIndexError
from reidcli.index.gallery import brute_force, prepare_vectors
from reidcli.index.inputs import load_rows
from reidcli.index.store import open_gallery
from reidcli.index.synthetic import clustered
from tests.conftest import reid

pytest.importorskip("faiss")

DIM, IDS = 32, 40
V1 = Path(__file__).parent / "data" / "index_v1"


def crop(i: int) -> str:
    return f"cam/person-crop-{i:06d}.jpg"  # no name is a prefix of another


def features_file(path: Path, rows: range, copies: dict | None = None) -> Path:
    """Rows `rows` of one synthetic gallery (3,000 rows, fixed seed); `copies` {row: source
    row} gives a row the features of another (exact ties across segments)."""
    data = clustered(3000, IDS, dim=DIM, seed=7, stream=1)
    feats = data.features.copy()
    for row, source in (copies or {}).items():
        feats[row] = feats[source]
    pick = np.asarray(rows)
    with path.open("wb") as handle:
        np.savez(handle, features=feats[pick], paths=np.array([crop(i) for i in pick]),
                 pids=data.pids[pick], camids=data.camids[pick])  # fmt: skip
    return path


def queries_file(path: Path) -> Path:
    data = clustered(60, IDS, dim=DIM, seed=7, stream=2)
    np.savez(path, features=data.features, paths=np.char.add("q/", np.arange(60).astype(str)))
    return path


def answers(index, queries, topk=20, **kw) -> list:
    found = api.search(index, queries, topk=topk, **kw).to_json()
    return [[(h["path"], h["distance"]) for h in e["hits"]] for e in found["results"]]


def named_files(index: Path) -> set:
    doc = json.loads((index / "MANIFEST").read_text())
    named = {"MANIFEST", *([doc["quantizer"]] if doc["quantizer"] else [])}
    for entry in doc["segments"]:
        named |= {entry["file"], *([entry["deleted_file"]] if entry["deleted_file"] else [])}
    return named


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("segments")
    # rows 1000.. copy rows of the first part: equal distances in two segments
    copies = {1000 + j: 7 * j for j in range(50)}
    out = {"all": features_file(base / "all.npz", range(1500), copies),
           "first": features_file(base / "first.npz", range(1000), copies),
           "queries": queries_file(base / "q.npz")}  # fmt: skip
    for k in range(5):
        out[k] = features_file(base / f"part{k}.npz", range(1000 + 100 * k, 1100 + 100 * k), copies)
    return out


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "hnsw"])
def test_appends_answer_as_one_build(parts, tmp_path, kind):
    options = {"ivfpq": {"nlist": 16, "pq_m": 8}, "hnsw": {"hnsw_m": 16}}.get(kind, {})
    grown, whole = tmp_path / "grown.idx", tmp_path / "whole.idx"
    api.index_build(parts["first"], grown, kind=kind, max_segments=0, **options)
    for k in range(5):
        written = api.index_add(grown, parts[k]).to_json()
        assert written["added"] == 100 and written["compacted"] == []
    info = api.index_info(grown).to_json()
    assert len(info["segments"]) == 6 and info["count"] == 1500 and info["deleted"] == 0
    assert [s["rows"] for s in info["segments"]] == [1000] + [100] * 5
    api.index_build(parts["all"], whole, kind=kind, **options)
    queries, _ = load_rows(parts["queries"], "query")
    rows, _ = load_rows(parts["all"], "gallery")
    if kind == "flat":  # the ranking of one flat index, ties (copied rows) by row id
        assert answers(grown, parts["queries"], 50) == answers(whole, parts["queries"], 50)
        q, g = (
            prepare_vectors(x, "cosine").astype(np.float64)
            for x in (queries.features, rows.features)
        )
        dist = 1.0 - q @ g.T
        order = np.lexsort((np.broadcast_to(np.arange(len(g)), dist.shape), dist), axis=1)
        expected = [[crop(i) for i in row[:50]] for row in order]
        assert [[p for p, _ in a] for a in answers(grown, parts["queries"], 50)] == expected
    else:  # approximate: the recall of one build of all rows, within noise
        truth = brute_force(prepare_vectors(queries.features, "cosine"),
                            prepare_vectors(rows.features, "cosine"), "cosine", 10)  # fmt: skip

        def recall(index):
            got = [[p for p, _ in a] for a in answers(index, parts["queries"], 10)]
            return np.mean([len({crop(i) for i in t} & set(f)) / 10 for t, f in
                            zip(truth, got, strict=True)])  # fmt: skip

        assert recall(grown) >= recall(whole) - 0.03 and recall(grown) >= 0.85
    before = answers(grown, parts["queries"])
    done = api.index_compact(grown).to_json()
    assert (done["segments_before"], done["segments_after"]) == (6, 1)
    if kind == "hnsw":  # one graph of all rows: the same neighbours up to the approximation
        same = np.mean([a[0][0] == b[0][0] for a, b in zip(answers(grown, parts["queries"]),
                                                           before, strict=True)])  # fmt: skip
        assert same >= 0.9
    else:
        assert answers(grown, parts["queries"]) == before
    assert {p.name for p in grown.iterdir()} == named_files(grown)


def test_an_add_writes_one_segment_and_rewrites_nothing(parts, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(parts["first"], index)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in index.iterdir()}
    api.index_add(index, parts[0])
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in index.iterdir()}
    new = set(after) - set(before)
    assert len(new) == 1 and next(iter(new)).startswith("seg-")
    assert {k: v for k, v in after.items() if k in before and k != "MANIFEST"} == {
        k: v for k, v in before.items() if k != "MANIFEST"
    }
    # the new segment holds the 100 rows, not the 1,000 before them
    assert (index / next(iter(new))).stat().st_size < 100 * DIM * 4 + 20_000


def test_duplicates_are_refused_unless_replaced(parts, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(parts["first"], index)
    api.index_add(index, parts[0])
    with pytest.raises(
        GalleryIndexError,
        match=r"100 of the 100 paths are already in .*"
        + crop(1000)
        + r".*nothing added; pass --replace",
    ):
        api.index_add(index, parts[0])
    done = reid("index", "add", str(index), str(parts[0]))
    assert done.returncode == 1 and "already in" in done.stderr and crop(1000) in done.stderr
    assert api.index_info(index).count == 1100
    # --replace: the new embeddings replace the stored rows of the same paths
    moved = tmp_path / "moved.npz"
    rows, _ = load_rows(parts[0], "gallery")
    np.savez(moved, features=-rows.features, paths=rows.paths.astype(str), pids=rows.pids,
             camids=rows.camids)  # fmt: skip
    done = api.index_add(index, moved, replace=True).to_json()
    assert (done["added"], done["replaced"], done["count"]) == (100, 100, 1100)
    own = api.search(index, moved, topk=1).to_json()
    assert all(e["hits"][0]["path"] == e["path"] for e in own["results"])
    assert all(e["hits"][0]["distance"] < 1e-6 for e in own["results"])
    # a file listing a path twice is refused too
    twice = tmp_path / "twice.npz"
    np.savez(twice, features=rows.features[:2], paths=np.array(["x.jpg", "x.jpg"]))
    with pytest.raises(GalleryIndexError, match="appear more than once"):
        api.index_add(index, twice)


def test_removal_hides_rows_and_purge_erases_their_bytes(parts, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(parts["first"], index)
    api.index_add(index, parts[0])
    rows, _ = load_rows(parts["first"], "gallery")
    pid = int(rows.pids[3])
    theirs = [p for p, q in zip(rows.paths, rows.pids, strict=True) if q == pid]
    vector = prepare_vectors(rows.features[3:4], "cosine")[0].tobytes()

    def holding():
        return [p.name for p in index.iterdir() if p.is_file() and (
            theirs[0].encode() in p.read_bytes() or vector in p.read_bytes())]  # fmt: skip

    done = reid("index", "remove", str(index), "--pid", str(pid))
    assert done.returncode == 0 and "stay in the index's segment files" in done.stderr
    assert holding() and api.index_info(index).to_json()["deleted"] > 0
    hits = api.search(index, parts["queries"], topk=200).to_json()
    assert all(h["pid"] != pid for e in hits["results"] for h in e["hits"])
    # purge (here of a path of another person): every segment holding deleted rows rewritten
    other = rows.paths[0]
    (tmp_path / "erase.txt").write_text(other + "\n")
    done = reid("index", "remove", str(index), "--paths", str(tmp_path / "erase.txt"), "--purge")
    assert done.returncode == 0 and "no file of the index contains them" in done.stderr
    assert holding() == [] and not any(other.encode() in p.read_bytes() for p in
                                       index.iterdir() if p.is_file())  # fmt: skip
    info = api.index_info(index).to_json()
    added, _ = load_rows(parts[0], "gallery")
    gone = len(theirs) + int((added.pids == pid).sum()) + 1
    assert info["deleted"] == 0 and info["count"] == 1100 - gone
    assert {p.name for p in index.iterdir()} == named_files(index)


def test_compaction_on_its_own_past_the_thresholds(parts, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(parts["first"], index, max_segments=3)
    merged = []
    for k in range(5):
        merged += api.index_add(index, parts[k]).to_json()["compacted"]
        assert len(api.index_info(index).to_json()["segments"]) <= 3
    assert merged and all("over 3 segments" in line for line in merged)
    whole = tmp_path / "whole.idx"
    api.index_build(parts["all"], whole)
    assert answers(index, parts["queries"]) == answers(whole, parts["queries"])
    # a segment mostly deleted is rewritten without its deleted rows
    last = api.index_info(index).to_json()["segments"][-1]
    listing = tmp_path / "erase.txt"
    ids = np.arange(last["first_id"], last["last_id"] + 1)
    paths = open_gallery(index).labels(ids)[0]
    listing.write_text("\n".join(paths[: int(0.3 * len(paths)) + 1]) + "\n")
    done = api.index_remove(index, paths_file=listing).to_json()
    assert done["compacted"] and "over 25% of it deleted" in done["compacted"][0]
    assert api.index_info(index).to_json()["deleted"] == 0


def test_stale_quantizer_note_and_rebuild(parts, tmp_path):
    index = tmp_path / "p.idx"
    small = features_file(tmp_path / "small.npz", range(300))
    api.index_build(small, index, kind="ivfpq", nlist=4, pq_m=8)
    assert "quantizer_note" not in api.index_info(index).to_json()
    api.index_add(index, features_file(tmp_path / "rest.npz", range(300, 3000)))
    info = api.index_info(index).to_json()
    assert "trained on 300 rows" in info["quantizer_note"] and "reid index rebuild" in (
        info["quantizer_note"])  # fmt: skip
    listing = sorted(p.name for p in index.iterdir())
    dry = api.index_rebuild(index, dry_run=True).to_json()
    assert not dry["written"] and sorted(p.name for p in index.iterdir()) == listing
    assert dry["nlist_before"] == 4 and dry["nlist_after"] > 4 and dry["count"] == 3000
    assert 0 <= dry["recall_before"] <= 1 and 0 <= dry["recall_after"] <= 1
    done = api.index_rebuild(index).to_json()
    assert done["written"] and done["recall_after"] == dry["recall_after"]
    info = api.index_info(index).to_json()
    assert "quantizer_note" not in info and info["params"]["nlist"] == dry["nlist_after"]
    assert info["recall"]["recall_at_10"] == done["recall_after"] and len(info["segments"]) == 1
    refused = reid("index", "rebuild", str(tmp_path / "x.idx"))
    assert refused.returncode == 1


def test_the_single_file_format_is_refused_by_name_and_upgraded(tmp_path):
    expected = json.loads((V1 / "expected.json").read_text())
    for name in ("flat.idx", "hnsw.idx", "ivfpq.idx", "queries.npz"):
        shutil.copy(V1 / name, tmp_path / name)
    done = reid("search", str(tmp_path / "flat.idx"), str(tmp_path / "queries.npz"))
    assert done.returncode == 1 and f"reid index upgrade {tmp_path / 'flat.idx'}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    for kind in ("flat", "hnsw", "ivfpq"):
        index = tmp_path / f"{kind}.idx"
        done = reid("index", "upgrade", str(index))
        assert done.returncode == 0, done.stderr
        assert index.is_dir() and (tmp_path / f"{kind}.idx.v1").is_file()
        got = answers(index, tmp_path / "queries.npz", 10)
        # the same ids; distances as the v1 file's on the CPU that wrote the expected answers,
        # to float32 rounding (other CPUs sum in another order)
        assert [[p for p, _ in row] for row in got] == [[p for p, _ in r] for r in expected[kind]]
        distances = np.array([[d for _, d in row] for row in got])
        np.testing.assert_allclose(
            distances, [[d for _, d in r] for r in expected[kind]], atol=1e-5
        )
    again = reid("index", "upgrade", str(tmp_path / "flat.idx"))
    assert again.returncode == 1 and "already an index folder" in again.stderr


# -- writers killed at every step -------------------------------------------------------------

KILLER = """
import os, signal, sys
from reidcli.index import segments
point, argv = sys.argv[1], sys.argv[2:]
real_replace, real_sync, real_unnamed = os.replace, segments.fsync_folder, segments.remove_unnamed

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst, *a, **k):
    name = os.path.basename(str(dst))
    if point == "segment" and name.endswith(".rseg"):
        die()
    if point == "manifest" and name == "MANIFEST":
        die()
    real_replace(src, dst, *a, **k)
    if point == "published" and name == "MANIFEST":
        die()

def unnamed(folder, doc):
    if point == "cleanup":
        die()
    return real_unnamed(folder, doc)

def written(path, values):
    if point == "deletions":
        die()
    return real_written(path, values)

real_written = segments.write_array_file
os.replace, segments.remove_unnamed, segments.write_array_file = replace, unnamed, written
from reidcli.cli import main
sys.argv = ["reid", *argv]
main()
"""


def killed(point: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", KILLER, point, *args], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip


CHANGES = {  # change -> (its command, the points it passes through)
    "add": (["index", "add", "{index}", "{part}"], ["segment", "manifest", "published"]),
    "remove": (["index", "remove", "{index}", "--pid", "{pid}"],
               ["deletions", "manifest", "published", "cleanup"]),
    "compact": (["index", "compact", "{index}"], ["segment", "manifest", "published", "cleanup"]),
    "purge": (["index", "remove", "{index}", "--pid", "{pid}", "--purge"],
              ["segment", "manifest", "cleanup"]),
}  # fmt: skip


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_writer_killed_at_any_step_leaves_the_index_before_or_after(parts, tmp_path, change):
    rows, _ = load_rows(parts["first"], "gallery")
    pid = str(int(rows.pids[0]))
    base = tmp_path / "base.idx"
    api.index_build(parts["first"], base, kind="ivfpq", nlist=8, pq_m=8, max_segments=0)
    api.index_add(base, parts[0])
    api.index_remove(base, pid=int(rows.pids[1]))
    command, points = CHANGES[change]
    # the answers before, and after the change done without interruption
    done = tmp_path / "done.idx"
    shutil.copytree(base, done)
    fill = {"index": str(done), "part": str(parts[1]), "pid": pid}
    finished = reid(*[a.format(**fill) for a in command])
    assert finished.returncode == 0, finished.stderr
    before, after = answers(base, parts["queries"]), answers(done, parts["queries"])
    assert before != after or change == "compact"
    for point in points:
        index = tmp_path / f"{point}.idx"
        shutil.copytree(base, index)
        fill["index"] = str(index)
        run = killed(point, *[a.format(**fill) for a in command])
        assert run.returncode == -signal.SIGKILL, (point, run.stderr)
        assert answers(index, parts["queries"]) in (before, after), point
        # the next writer is not blocked by the dead one's lock, and removes what it left
        again = reid(*[a.format(**fill) for a in command])
        if again.returncode != 0:  # the change had landed: the retry finds nothing to do
            assert "no row of person" in again.stderr or "already in" in again.stderr, again
        assert answers(index, parts["queries"]) == after, point
        assert {p.name for p in index.iterdir()} == named_files(index), point
        assert not list(tmp_path.glob(".*.building")), point


def test_a_search_during_compaction_answers_before_or_after(parts, tmp_path):
    index = tmp_path / "g.idx"
    api.index_build(parts["first"], index, max_segments=0)
    for k in range(5):
        api.index_add(index, parts[k])
    api.index_remove(index, pid=1)
    expected = answers(index, parts["queries"])
    opened = open_gallery(index)  # opened before: keeps reading the files it opened
    queries, _ = load_rows(parts["queries"], "query")
    held = opened.search(queries.features, 20)
    slow = KILLER.replace(
        "point, argv = sys.argv[1], sys.argv[2:]",
        "point, argv = sys.argv[1], sys.argv[2:]\nimport time",
    )
    slow = slow.replace(
        "def die():\n    os.kill(os.getpid(), signal.SIGKILL)", "def die():\n    time.sleep(0.4)"
    )  # a pause at each step instead
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    seen = 0
    for point in ("segment", "manifest", "published", "cleanup"):
        shutil.rmtree(tmp_path / "work.idx", ignore_errors=True)
        shutil.copytree(index, tmp_path / "work.idx")
        proc = subprocess.Popen([sys.executable, "-c", slow, point, "index", "compact",
                                 str(tmp_path / "work.idx")], env=env,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        while proc.poll() is None:
            assert answers(tmp_path / "work.idx", parts["queries"]) == expected
            seen += 1
        assert proc.wait() == 0, proc.stderr.read()
        assert len(api.index_info(tmp_path / "work.idx").to_json()["segments"]) == 1
    assert seen >= 4
    shutil.rmtree(tmp_path / "work.idx")
    api.index_compact(index)
    again = opened.search(queries.features, 20)
    np.testing.assert_array_equal(again.ids, held.ids)
    assert answers(index, parts["queries"]) == expected
