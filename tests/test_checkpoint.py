"""Checkpoints: atomic writes, weights_only loading, RNG state round trip, resume checks."""

import json
import os
import random

import numpy as np
import pytest
import torch

from reidcli.engine.checkpoint import check_resume_recipe, load_checkpoint, save_checkpoint
from reidcli.engine.runtime import rng_state, set_rng_state
from reidcli.errors import CheckpointError, TrainingError
from reidcli.recipe import Recipe, validate_recipe


def minimal_state(**extra):
    return {
        "model": {"w": torch.arange(4.0)},
        "recipe": json.dumps(Recipe().to_dict()),
        "num_classes": 3,
        "epoch": 1,
        "step": 10,
        **extra,
    }


def test_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, minimal_state(rng=rng_state()))
    state = load_checkpoint(path)
    assert state["version"] == 1 and torch.equal(state["model"]["w"], torch.arange(4.0))
    # The file really is loadable by plain torch with weights_only=True.
    assert torch.load(path, weights_only=True)["step"] == 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, minimal_state(step=1))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, minimal_state(step=2))
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, minimal_state(step=1))
    real_save = torch.save

    def killed(obj, handle):
        real_save(obj, handle)
        raise KeyboardInterrupt  # dies after writing part of the temporary file

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, minimal_state(step=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"garbage\.pt: not a PyTorch checkpoint \(16 bytes\)"
    ):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a reid training checkpoint"):
        load_checkpoint(plain)


def test_rng_state_round_trip():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_refuses_model_change_and_lists_fields():
    saved = Recipe().to_dict()
    changed = validate_recipe({"model": {"name": "osnet_x0_25", "feats": 256}})
    with pytest.raises(TrainingError) as err:
        check_resume_recipe(saved, changed)
    assert "model.name: 'lmbn_n' -> 'osnet_x0_25'" in str(err.value)
    assert "model.feats: 512 -> 256" in str(err.value)


def test_resume_allows_logging_and_eval_changes():
    saved = Recipe().to_dict()
    changed = validate_recipe({"train": {"eval_every": 3, "log_every": 5}, "eval": {"flip": False}})
    check_resume_recipe(saved, changed)


def test_unreadable_files_are_named_for_what_they_are(tmp_path):
    from reidcli.models.weights import read_state_dict

    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(1000)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:1500])  # an interrupted download
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "page.pth"
    text.write_text("<html>404 Not Found</html>\n")
    for path, what in ((truncated, "truncated or corrupted"), (empty, "empty"),
                       (text, "not a PyTorch checkpoint")):  # fmt: skip
        for load in (load_checkpoint, read_state_dict):
            with pytest.raises(CheckpointError, match=what) as err:
                load(path)
            assert "weights_only" not in str(err.value)


def test_pickled_objects_are_refused_without_advice_to_run_them(tmp_path):
    import argparse

    from reidcli.models.weights import read_state_dict

    path = tmp_path / "model-best.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, path)
    for load in (load_checkpoint, read_state_dict):
        with pytest.raises(CheckpointError) as err:
            load(path)
        message = str(err.value)
        assert "argparse.Namespace" in message and "could run arbitrary code" in message
        assert "weights_only=False" not in message and "will likely succeed" not in message
