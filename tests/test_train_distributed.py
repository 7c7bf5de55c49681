"""`reid train` under torchrun: two processes, a rank that dies, two nodes, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reidcli.engine.checkpoint import load_checkpoint
from tests.train_support import (
    ONE_THREAD,
    ROOT,
    assert_same_weights,
    final_weights,
    torchrun,
    wait_for,
    write_recipe,
)


def test_torchrun_two_processes_gloo(tmp_path, dataset):
    # Center loss keeps parameters outside DDP; their gradients are averaged across ranks too.
    loss = [{"name": "cross_entropy"}, {"name": "triplet"}, {"name": "center"}]
    recipe_path = write_recipe(tmp_path, dataset, train__epochs=2, train__eval_every=2, loss=loss)
    run = tmp_path / "ddp"
    env = ONE_THREAD
    done = subprocess.run(torchrun(str(recipe_path), "--out", str(run), "--json"), cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [2]
    assert len([r for r in records if r["kind"] == "epoch"]) == 2
    assert (run / "last.pt").exists() and (run / "best.pt").exists()
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2
    assert set(state["criterion"]) == {"centers.512"}


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory, dataset) -> tuple[Path, Path]:
    """A recipe checkpointing every 2 steps and its uninterrupted 2-process gloo run."""
    folder = tmp_path_factory.mktemp("ddp")
    recipe_path = write_recipe(folder, dataset, train__epochs=2, train__eval_every=0,
                               train__checkpoint={"every_steps": 2})  # fmt: skip
    full = folder / "full"
    done = subprocess.run(torchrun(str(recipe_path), "--out", str(full)), cwd=ROOT, env=ONE_THREAD,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return recipe_path, full


def mid_epoch_two(run: Path):
    def check() -> bool:
        if not (run / "last.pt").exists():
            return False
        time.sleep(0.2)
        state = load_checkpoint(run / "last.pt")
        return state["epoch"] == 1 and state["batch_in_epoch"] > 0

    return check


def test_ddp_sigkill_mid_epoch_and_resume_is_bit_identical(tmp_path, ddp_reference):
    recipe_path, full = ddp_reference
    killed = tmp_path / "killed"
    # its own session, so that SIGKILL reaches torchrun and both training processes at once
    proc = subprocess.Popen(torchrun(str(recipe_path), "--out", str(killed)), cwd=ROOT,
                            env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for(mid_epoch_two(killed))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(killed / "last.pt")
    assert state["epoch"] == 1 and state["batch_in_epoch"] > 0 and state["world_size"] == 2
    done = subprocess.run(torchrun("--resume", "--out", str(killed)), cwd=ROOT, env=ONE_THREAD,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(final_weights(full), final_weights(killed))


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_torchrun_max_restarts_continues_after_a_rank_dies(tmp_path, ddp_reference):
    # One training process is killed mid-epoch; torchrun restarts the group, and the same
    # `reid train RECIPE --out RUN` continues RUN from its last.pt, ending where an
    # uninterrupted run ends.
    recipe_path, full = ddp_reference
    run = tmp_path / "elastic"
    command = torchrun(str(recipe_path), "--out", str(run), "--json", restarts=1)
    proc = subprocess.Popen(command, cwd=ROOT, env=ONE_THREAD, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        wait_for(mid_epoch_two(run))
        ranks = children(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "exitcode: -9" in err, err[-3000:]  # torchrun saw the rank die, then restarted
    assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
    assert_same_weights(final_weights(full), final_weights(run))


def test_two_nodes_c10d_rendezvous(tmp_path, dataset):
    # Two torchrun launches on this machine, one process each, meeting at a c10d rendezvous as
    # two machines would; the run folder is shared (as on shared storage).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recipe_path = write_recipe(tmp_path, dataset, train__epochs=2, train__eval_every=2)
    run = tmp_path / "nodes"
    env = ONE_THREAD
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
              "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "reid-test",
              "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "reidcli", "train",
              str(recipe_path), "--out", str(run), "--json"]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    nodes = [subprocess.Popen(launch, cwd=ROOT, env=env, **pipes) for _ in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    # rank 0 alone writes the summary, the metrics and the checkpoints; validation runs once
    summaries = [out.strip().splitlines()[-1] for out, _ in outputs if out.strip()]
    assert len(summaries) == 1 and json.loads(summaries[0])["status"] == "completed"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [2]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and state["world_size"] == 2
