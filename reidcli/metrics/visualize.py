"""PNG figures of an evaluation: ranked lists of the worst and best queries, the CMC curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reidcli.errors import FeaturesError
from reidcli.metrics.evaluate import Evaluation
from reidcli.metrics.features import Features

THUMB = (64, 128)  # width, height of each image in a ranked list
BORDER = 4
GREEN, RED, GREY = (0, 170, 0), (210, 0, 0), (128, 128, 128)


def _thumbnail(path: str, frame: tuple[int, int, int] | None) -> Image.Image:
    """An image resized to THUMB inside a coloured frame (grey placeholder if unreadable)."""
    w, h = THUMB
    tile = Image.new("RGB", (w + 2 * BORDER, h + 2 * BORDER), frame or (255, 255, 255))
    try:
        with Image.open(path) as img:
            tile.paste(img.convert("RGB").resize(THUMB), (BORDER, BORDER))
    except OSError:
        tile.paste(Image.new("RGB", THUMB, GREY), (BORDER, BORDER))
    return tile


def _ranked_list(feats: Features, query: int, top: np.ndarray, ap: float) -> Image.Image:
    """One row: the query, a gap, then its top gallery items framed green (match) or red."""
    tile_w, tile_h = THUMB[0] + 2 * BORDER, THUMB[1] + 2 * BORDER
    canvas = Image.new("RGB", ((len(top) + 1) * tile_w + 16, tile_h + 18), (255, 255, 255))
    canvas.paste(_thumbnail(str(feats.query_paths[query]), None), (0, 18))
    q_pid = feats.query_pids[query]
    for i, g in enumerate(top):
        frame = GREEN if feats.gallery_pids[g] == q_pid else RED
        canvas.paste(_thumbnail(str(feats.gallery_paths[g]), frame), (16 + (i + 1) * tile_w, 18))
    label = f"query {query} (pid {q_pid}, cam {feats.query_camids[query]}): AP {100 * ap:.1f}%"
    ImageDraw.Draw(canvas).text((2, 2), label, fill=(0, 0, 0))
    return canvas


def save_ranked_lists(out_dir: str | Path, feats: Features, result: Evaluation, n: int) -> list:
    """Write `worst.png` and `best.png`: ranked lists of the n lowest- and highest-AP queries.

    Args:
        out_dir: Destination folder (created).
        feats: The evaluated features, with image paths.
        result: An evaluation run with top_k > 0.
        n: Queries per figure.

    Returns:
        The written paths.

    Raises:
        FeaturesError: When the features file has no image paths.
    """
    if not feats.has_paths:
        raise FeaturesError("--visualize needs query_paths and gallery_paths in the features file")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = np.flatnonzero(result.scores.valid)
    order = kept[np.argsort(result.scores.ap[kept], kind="stable")]
    written = []
    for name, queries in (("worst", order[:n]), ("best", order[::-1][:n])):
        rows = [_ranked_list(feats, q, result.top[q], result.scores.ap[q]) for q in queries]
        if not rows:
            continue
        sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), (255, 255, 255))
        for i, row in enumerate(rows):
            sheet.paste(row, (0, i * row.height))
        path = out_dir / f"{name}.png"
        sheet.save(path)
        written.append(path)
    return written


def save_cmc_curve(path: str | Path, metrics: dict, size: tuple[int, int] = (640, 420)) -> Path:
    """Plot the CMC curve (orange; the re-ranked one in blue when present) to a PNG."""
    w, h = size
    left, right, top, bottom = 50, 20, 20, 40
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((left, top, w - right, h - bottom), outline=(0, 0, 0))
    curves = [(metrics["cmc"], (200, 60, 0))]
    if "reranked" in metrics:
        curves.append((metrics["reranked"]["cmc"], (0, 80, 200)))
    low = min(min(c) for c, _ in curves)
    low = max(0.0, np.floor(low * 10) / 10 - 0.05)
    span_x, span_y = w - left - right, h - top - bottom

    def xy(rank: int, value: float, length: int) -> tuple[float, float]:
        x = left + span_x * (rank - 1) / max(1, length - 1)
        return x, top + span_y * (1 - (value - low) / (1 - low + 1e-12))

    for frac in np.linspace(low, 1.0, 5):
        y = xy(1, frac, 2)[1]
        draw.text((4, y - 6), f"{100 * frac:.0f}%", fill=(0, 0, 0))
    for cmc, colour in curves:
        points = [xy(r + 1, v, len(cmc)) for r, v in enumerate(cmc)]
        draw.line(points, fill=colour, width=2)
    draw.text((left, h - bottom + 10), f"rank 1 .. {len(curves[0][0])}", fill=(0, 0, 0))
    legend = "orange: original, blue: re-ranked" if len(curves) > 1 else "CMC"
    draw.text((w - 220, h - bottom + 10), legend, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_roc_curve(path: str | Path, calibration: dict, size: tuple[int, int] = (640, 420)) -> Path:
    """Plot a calibration's ROC curve (TAR against FAR on a log scale) with its calibrated
    thresholds marked, to a PNG."""
    w, h = size
    left, right, top, bottom = 50, 20, 20, 56
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((left, top, w - right, h - bottom), outline=(0, 0, 0))
    far = np.asarray(calibration["curve"]["far"], np.float64)
    tar = np.asarray(calibration["curve"]["tar"], np.float64)
    lo = np.floor(np.log10(max(far.min(), 1e-12)))
    span_x, span_y = w - left - right, h - top - bottom

    def xy(f: float, t: float) -> tuple[float, float]:
        x = left + span_x * (np.log10(max(f, 1e-12)) - lo) / max(1e-12, -lo)
        return x, top + span_y * (1 - t)

    for frac in np.linspace(0, 1, 5):
        draw.text((4, xy(1, frac)[1] - 6), f"{100 * frac:.0f}%", fill=(0, 0, 0))
    for exponent in range(int(lo), 1):
        x = xy(10.0**exponent, 0)[0]
        draw.line((x, h - bottom, x, h - bottom + 4), fill=(0, 0, 0))
        draw.text((x - 10, h - bottom + 6), f"1e{exponent}", fill=(0, 0, 0))
    draw.line([xy(f, t) for f, t in zip(far, tar, strict=True)], fill=(200, 60, 0), width=2)
    for level in calibration["thresholds"]:
        x, y = xy(level["far"], level["tar"])
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=(0, 80, 200), width=2)
        draw.text((x + 6, y + 4), f"{level['threshold']:.3f}", fill=(0, 80, 200))
    draw.text((left, h - 20), "TAR (true matches) against FAR (false matches, log scale); blue: "
              "calibrated thresholds", fill=(0, 0, 0))  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
