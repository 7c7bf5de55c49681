"""`reid index compact|rebuild|upgrade`: keeping an index folder in shape as it grows."""

from __future__ import annotations

import time
from pathlib import Path

from reidcli.errors import GalleryIndexError
from reidcli.index.store import open_gallery, writing
from reidcli.recipe.options import GalleryAt, IndexRebuildOptions
from reidcli.results import IndexCompactResult, IndexRebuildResult, IndexUpgradeResult


def _folder_gallery(index, at: GalleryAt, verb: str):
    """The faiss gallery of an index folder (`verb` names the command in the refusal).

    Raises:
        GalleryIndexError: a Milvus collection.
    """
    if at.backend != "faiss":
        raise GalleryIndexError(
            f"reid index {verb} applies to faiss index folders; Milvus compacts and re-indexes "
            "its segments on its own"
        )
    return open_gallery(index, "faiss")


def compact_index(index, at: GalleryAt) -> IndexCompactResult:
    """See `reidcli.api.index_compact`."""
    started = time.perf_counter()
    with writing(index, at.backend, at.uri):
        gallery = _folder_gallery(index, at, "compact")
        before = gallery.describe()
        gallery.compact()
        gallery.save()
        after = gallery.describe()
    return IndexCompactResult(
        str(index), len(before["segments"]), len(after["segments"]), before["deleted"],
        before["bytes_on_disk"], after["bytes_on_disk"],
        round(time.perf_counter() - started, 3),
    )  # fmt: skip


def upgrade_index(index) -> IndexUpgradeResult:
    """See `reidcli.api.index_upgrade`."""
    from reidcli.index.legacy import upgrade

    with writing(index, "faiss"):
        done = upgrade(Path(index))
    return IndexUpgradeResult(done["index"], done["kind"], done["count"], done["kept"])


def rebuild_index(index, options: IndexRebuildOptions) -> IndexRebuildResult:
    """See `reidcli.api.index_rebuild`."""
    from reidcli.index.faiss_backend import FaissGallery
    from reidcli.index.faiss_common import default_nlist, train_quantizer
    from reidcli.index.gallery import Rows
    from reidcli.verbs.index import NPROBE_SHARE

    started = time.perf_counter()
    with writing(index, options.backend, options.uri):
        gallery = _folder_gallery(index, options, "rebuild")
        if gallery.kind != "ivfpq":
            raise GalleryIndexError(
                f"{index} is a {gallery.kind} index: only IVF-PQ has a trained quantizer to "
                "rebuild (reid index compact merges segments of any kind)"
            )
        if gallery.meta["params"].get("refine", 0) <= 0:
            raise GalleryIndexError(
                f"{index} keeps no float32 rows (refine 0): its quantizer cannot be trained again "
                "from PQ codes; build the index again from the features files"
            )
        ids, paths, pids, camids = gallery._label_arrays()
        count = len(ids)
        nlist = options.nlist or default_nlist(count)
        if count < max(256, nlist):
            raise GalleryIndexError(
                f"{index} holds {count} rows: IVF-PQ needs at least {max(256, nlist)} to train "
                f"{nlist} lists and 256 centroids per sub-space"
            )
        vectors = gallery._reconstruct(ids)
        sample, seed = options.recall_sample, options.seed
        recall_before = gallery.measure_recall(vectors, ids, sample, seed)["recall_at_10"]
        meta = dict(gallery.meta)
        meta["params"] = dict(meta["params"], nlist=nlist)
        meta["search"] = {"nprobe": max(1, min(nlist, nlist // NPROBE_SHARE))}
        quantizer, trained = train_quantizer(gallery.faiss, vectors, meta, seed)
        meta["params"]["trained_rows"] = int(trained)
        doc = dict(gallery.doc, meta=meta, segments=[], quantizer=None)
        rebuilt = FaissGallery(Path(index), doc, [], quantizer)
        rebuilt.segments.append(
            rebuilt._segment_of(vectors, ids, Rows(vectors, paths, pids, camids))
        )
        recall = rebuilt.measure_recall(vectors, ids, sample, seed)
        seconds = round(time.perf_counter() - started, 2)
        if not options.dry_run:
            meta["recall"] = recall | {"k": 10, "search": meta["search"], "rows": count,
                                       "seconds": seconds}  # fmt: skip
            rebuilt.save()
    return IndexRebuildResult(
        str(index), count, int(gallery.meta["params"]["nlist"]), nlist,
        gallery.meta["params"].get("trained_rows"), int(trained), recall_before,
        recall["recall_at_10"], not options.dry_run, seconds,
    )  # fmt: skip
