"""Validation during training: embed the validation query and gallery, score them."""

import numpy as np
import pandas as pd
from torch import nn

from reidcli.data.loaders import build_eval_loader
from reidcli.engine.extract import extract_features, gather_rows
from reidcli.engine.runtime import Runtime
from reidcli.metrics.evaluate import PUBLIC_KEYS, evaluate_features
from reidcli.metrics.features import as_features
from reidcli.recipe import Recipe
from reidcli.recipe.run import Eval


def embed_frame(
    model: nn.Module, frame: pd.DataFrame, recipe: Recipe, runtime: Runtime, progress=None
) -> np.ndarray:
    """(N, E) embeddings of a manifest frame; in a distributed run each rank embeds every
    world_size-th row and all ranks receive every row."""
    rows = np.arange(len(frame))[runtime.rank :: runtime.world_size]
    loader = build_eval_loader(frame.iloc[rows].reset_index(drop=True), recipe.data)
    local = extract_features(
        model,
        loader,
        runtime,
        flip=recipe.eval.flip,
        normalize=recipe.eval.normalize,
        progress=progress,
    )
    return gather_rows(local, rows, len(frame), runtime)


def validate(model: nn.Module, recipe: Recipe, data, runtime: Runtime) -> dict:
    """Metrics on the validation identities (never the test split)."""
    qf = embed_frame(model, data.val_query, recipe, runtime)
    gf = embed_frame(model, data.val_gallery, recipe, runtime)
    feats = as_features(
        qf,
        gf,
        data.val_query["pid"].to_numpy(),
        data.val_gallery["pid"].to_numpy(),
        data.val_query["camid"].to_numpy(),
        data.val_gallery["camid"].to_numpy(),
    )
    # the recipe's distance and ranks; no re-ranking or query expansion during training
    cfg = Eval(distance=recipe.eval.distance, ranks=recipe.eval.ranks)
    result = evaluate_features(feats, cfg)
    return {k: result[k] for k in PUBLIC_KEYS if k in result}
