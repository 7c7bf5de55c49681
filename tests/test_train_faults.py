"""`reid train` interrupted: signals, SIGKILL at any point, locks, and exact resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reidcli import api
from reidcli.engine.checkpoint import load_checkpoint, save_checkpoint
from reidcli.errors import OutputError, TrainingError
from tests.conftest import reid
from tests.train_support import (
    ROOT,
    assert_same_weights,
    epoch_logged,
    final_weights,
    metric_lines,
    wait_for,
    write_recipe,
)


@pytest.mark.portable
def test_sigkill_after_epoch_and_resume_is_bit_identical(tmp_path, dataset):
    recipe_path = write_recipe(tmp_path, dataset, train__epochs=2, train__eval_every=0)
    full = tmp_path / "full"
    assert reid("train", str(recipe_path), "--out", str(full), "--device", "cpu").returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reidcli", "train", str(recipe_path), "--out", str(killed)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(epoch_logged(killed, 1))
        wait_for(lambda: (killed / "last.pt").exists())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert load_checkpoint(killed / "last.pt")["epoch"] == 1  # killed before epoch 2 ended
    done = reid("train", "--resume", "--out", str(killed))
    assert done.returncode == 0, done.stderr
    assert_same_weights(final_weights(full), final_weights(killed))


@pytest.mark.portable
def test_sigkill_at_random_points_ten_times_resumes_bit_identically(tmp_path, dataset):
    """Killed at ten random points (during start-up, steps, checkpoint writes, validation) and
    continued each time, a run ends with the weights of one that ran through, one metrics line
    per epoch, and no temporary file left."""
    import random

    recipe_path = write_recipe(
        tmp_path, dataset, train__epochs=3, train__log_every=1,
        train__checkpoint={"every_steps": 2, "keep_epochs": True},
    )  # fmt: skip
    full = tmp_path / "full"
    assert reid("train", str(recipe_path), "--out", str(full), "--device", "cpu").returncode == 0
    run, rng, kills = tmp_path / "killed", random.Random(3), 0
    while kills < 10:
        if (run / "last.pt").exists():
            args = ["--resume", "--out", str(run)]
        else:  # killed before its first checkpoint: start over
            args = [str(recipe_path), "--out", str(run), "--overwrite"]
        lines = metric_lines(run)
        command = [sys.executable, "-m", "reidcli", "train", *args]
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            if rng.random() < 0.2:  # during start-up or the first step
                time.sleep(rng.uniform(0.5, 3.0))
            else:  # after a random number of further steps have been logged
                target = lines + rng.randint(1, 12)
                wait_for(lambda t=target, p=proc: metric_lines(run) >= t or p.poll() is not None)
                time.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.kill()
            _, err = proc.communicate()
        assert "Traceback" not in err, err
        if proc.returncode == 0:  # it finished before the kill landed
            break
        kills += 1
    if kills == 10:
        done = reid("train", "--resume", "--out", str(run))
        assert done.returncode == 0, done.stderr
    assert_same_weights(final_weights(full), final_weights(run))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and len(steps) == records[-1]["step"]
    assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".partial"))]
    env = json.loads((run / "env.json").read_text())
    assert env["command"][-2:] == ["--out", str(run)] or "--overwrite" in env["command"]
    assert len(env.get("resumes", [])) >= 1


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, dataset):
    from reidcli.locking import exclusive

    recipe_path = write_recipe(tmp_path, dataset, train__epochs=2, train__eval_every=0)
    run = tmp_path / "run"
    run.mkdir()
    with exclusive(run / ".reid.lock", "test holder"):
        done = reid("train", str(recipe_path), "--out", str(run))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"pid {os.getpid()}" in done.stderr and "one writer at a time" in done.stderr
    assert not list(run.iterdir()) or [p.name for p in run.iterdir()] == [".reid.lock"]
    # a holder killed without releasing: its record stays in the lock file
    (run / ".reid.lock").write_text(json.dumps({"pid": 999999, "command": "reid train x"}))
    done = reid("train", str(recipe_path), "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert "pid 999999" in done.stderr and "taking it over" in done.stderr


def test_trim_metrics_keeps_what_the_checkpoint_had_done(tmp_path):
    from reidcli.engine.run_folder import trim_metrics

    path = tmp_path / "metrics.jsonl"
    records = [
        {"kind": "train", "step": 1, "epoch": 0}, {"kind": "train", "step": 2, "epoch": 0},
        {"kind": "epoch", "step": 2, "epoch": 1}, {"kind": "val", "step": 2, "epoch": 1},
        {"kind": "train", "step": 3, "epoch": 1}, {"kind": "epoch", "step": 4, "epoch": 2},
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tra'
    path.write_text(text)
    assert trim_metrics(path, step=2, epoch=1) == 3  # two records after it, and a torn line
    assert [json.loads(x) for x in path.read_text().splitlines()] == records[:4]
    path.write_text(text)
    assert trim_metrics(path, step=2, epoch=0) == 5  # killed before the epoch's checkpoint
    assert [json.loads(x) for x in path.read_text().splitlines()] == records[:2]


def test_sigint_mid_epoch_saves_and_resumes_exactly(tmp_path, dataset):
    recipe_path = write_recipe(tmp_path, dataset, train__epochs=2, train__eval_every=0)
    full = tmp_path / "full"
    assert reid("train", str(recipe_path), "--out", str(full)).returncode == 0

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reidcli", "train", str(recipe_path), "--out", str(stopped)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(epoch_logged(stopped, 1))
        wait_for(lambda: (stopped / "last.pt").exists())
        time.sleep(0.3)  # somewhere inside epoch 2
    finally:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    state = load_checkpoint(stopped / "last.pt")
    if proc.returncode == 0:  # the run finished before the signal arrived; nothing to test
        pytest.skip("training ended before SIGINT")
    assert proc.returncode == 130, err
    assert "continue with --resume" in err and "Traceback" not in err
    assert state["epoch"] == 1 and state["batch_in_epoch"] > 0
    assert reid("train", "--resume", "--out", str(stopped)).returncode == 0
    assert_same_weights(final_weights(full), final_weights(stopped))


def test_sigusr1_saves_and_a_torchrun_restart_continues(tmp_path, dataset, monkeypatch):
    from reidcli.engine.interrupt import exit_code
    from reidcli.engine.step import TrainStep

    recipe_path = write_recipe(tmp_path, dataset, train__epochs=2, train__eval_every=0)
    run = tmp_path / "run"
    real, calls = TrainStep.__call__, []

    def preempted(self, batches, step):  # Slurm's warning signal arrives during the third step
        calls.append(step)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(self, batches, step)

    monkeypatch.setattr(TrainStep, "__call__", preempted)
    done = reid("train", str(recipe_path), "--out", str(run))
    assert done.returncode == exit_code("SIGUSR1") == 138, done.stderr
    assert "SIGUSR1: saved" in done.stderr and "continue with --resume" in done.stderr
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["step"]) == (0, 3)
    monkeypatch.setattr(TrainStep, "__call__", real)
    # Resuming with another number of processes is refused (the batch sequence depends on it).
    state["world_size"] = 2
    save_checkpoint(tmp_path / "two.pt", state)
    with pytest.raises(TrainingError, match=r"trained with 2 process\(es\) and is resumed with 1"):
        api.train(recipe_path, tmp_path / "other", resume_from=tmp_path / "two.pt", device="cpu")
    # The same command again is refused, unless torchrun restarted it (--max-restarts).
    with pytest.raises(OutputError, match="already holds a run"):
        api.train(recipe_path, run, device="cpu")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    result = api.train(recipe_path, run, device="cpu")
    assert result.status == "completed" and result.epochs_done == 2
