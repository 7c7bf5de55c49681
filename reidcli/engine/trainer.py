"""The training loop: epochs of identity batches, validation, checkpoints, exact resume."""

import json
import logging
import os
import time
from pathlib import Path

from reidcli.data.loaders import build_train_loader, clean_errors
from reidcli.devices import check_device
from reidcli.engine.checkpoint import (
    check_resume_recipe,
    load_checkpoint,
    save_checkpoint,
    saved_recipe,
)
from reidcli.engine.data import images_and_labels, load_run_data
from reidcli.engine.interrupt import StopRequest
from reidcli.engine.progress import EpochProgress
from reidcli.engine.run_folder import LOG_FOLDERS, run_folder, trim_metrics
from reidcli.engine.runtime import (
    Runtime,
    peak_memory_mb,
    reset_peak_memory,
    rng_state,
    set_rng_state,
)
from reidcli.engine.setup import RunParts, build_parts, check_runtime_options, write_run_files
from reidcli.engine.step import NonFiniteLoss, TrainStep
from reidcli.engine.tracker import Tracker
from reidcli.engine.validate import validate
from reidcli.errors import RecipeError, TrainingError
from reidcli.outputs import OutputFolder
from reidcli.recipe import Recipe
from reidcli.recipe.options import TrainOptions
from reidcli.reporting import Reporter
from reidcli.results import TrainResult

log = logging.getLogger(__name__)


def start_training(recipe, options: TrainOptions, overrides, reporter) -> TrainResult:
    """`reid train`: the recipe resolved and the run folder chosen (see `reidcli.api.train`).

    A torchrun restart (`TORCHELASTIC_RESTART_COUNT` > 0) continues the run folder from its
    last.pt as if `resume` were given; `resume` reads the run's own recipe.yaml when no recipe
    is given.
    """
    from reidcli.recipe import load_recipe, override_recipe

    check_device(options.device)
    resume, out = options.resume, options.out
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts and not resume and options.resume_from is None and out is not None:
        # torchrun --max-restarts restarted the group after a rank died: continue the run.
        resume = (Path(out) / "last.pt").is_file()
        if resume:
            log.warning("torchrun restart %d: continuing %s from its last.pt", restarts, out)
    resume_from = options.resume_from
    if resume:
        if out is None:
            raise RecipeError("resume continues a run folder: give it (out, --out RUN_DIR)")
        resume_from = str(Path(out) / "last.pt")
        if not Path(resume_from).is_file():
            raise RecipeError(f"resume: {resume_from} does not exist")
        recipe = recipe if recipe is not None else Path(out) / "recipe.yaml"
    if recipe is None:
        raise RecipeError("missing recipe: reid train RECIPE [--out RUN_DIR]")
    if isinstance(recipe, Recipe):
        resolved, name = override_recipe(recipe, overrides), recipe.model.name
    else:
        resolved, name = load_recipe(recipe, overrides), Path(recipe).stem
    if resolved.adapt is not None:
        raise RecipeError(
            "this recipe has an adapt section: run it with `reid adapt RECIPE` (reid train "
            "trains with labels and would ignore it)"
        )
    if out is None:
        out = str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    update = {"out": out, "resume": False, "resume_from": resume_from}
    return train(resolved, options.model_copy(update=update), reporter)


def train(recipe: Recipe, options: TrainOptions, reporter: Reporter | None = None) -> TrainResult:
    """Train a model as the recipe describes, writing a run folder.

    Args:
        recipe: the validated recipe.
        options: `out` the run folder (recipe.yaml, env.json, metrics.jsonl, last.pt, best.pt),
            `resume_from` a checkpoint to continue from, `device`, `overwrite` (start over in
            a folder that holds a run; its recorded files are removed).
        reporter: where progress goes (rank 0 only); silent when None.

    Raises:
        TrainingError: a non-finite loss, a refused resume.
        OutputError: the folder holds files reid did not write, or a run (without resuming
            or `overwrite`). InUseError: another process is writing the run folder.
        DatasetError: the prepared dataset is missing or an image cannot be read.
    """
    run_dir = Path(options.out or ".")
    resume_from = options.resume_from
    cfg = recipe.train
    runtime = Runtime.from_env(
        options.device, cfg.amp, cfg.channels_last, cfg.seed, cfg.deterministic
    )
    try:
        check_runtime_options(recipe, runtime)
        state = None
        if resume_from is not None:
            state = load_checkpoint(resume_from)
            check_resume_recipe(saved_recipe(state, resume_from), recipe)
        with run_folder(run_dir, runtime, resume_from is not None, options.overwrite) as folder:
            trainer = _build_trainer(recipe, run_dir, runtime, reporter, folder)
            if state is not None:
                trainer.restore(state)
            if runtime.is_main:
                write_run_files(run_dir, recipe, runtime, resumed=state is not None)
                trimmed = trim_metrics(run_dir / "metrics.jsonl", trainer.step, trainer.epoch)
                if trimmed:
                    log.warning(
                        "metrics.jsonl: dropped %d record(s) written after the "
                        "checkpoint resumed from (they will be written again)",
                        trimmed,
                    )
            runtime.barrier()
            return trainer.fit()
    finally:
        runtime.close()


def _build_trainer(recipe, run_dir, runtime, reporter, folder) -> "Trainer":
    cfg = recipe.train
    data = load_run_data(recipe)
    loader = build_train_loader(
        data.train, recipe.data, seed=cfg.seed, rank=runtime.rank, world_size=runtime.world_size
    )
    steps = len(loader.batch_sampler) // cfg.grad_accum
    if steps == 0:
        raise TrainingError(
            f"one epoch has {len(loader.batch_sampler)} batches, fewer than "
            f"train.grad_accum ({cfg.grad_accum}); lower data.p or grad_accum"
        )
    parts = build_parts(recipe, data, runtime, steps)
    if not runtime.is_main or reporter is None:
        reporter = Reporter()
    return Trainer(recipe, run_dir, runtime, parts, data, loader, reporter, folder)


class Interrupted(TrainingError):
    """Raised internally when a stop was requested; the checkpoint is already written."""


class Trainer:
    """Runs epochs from the current position to `train.epochs`."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        runtime: Runtime,
        parts: RunParts,
        data,
        loader,
        reporter: Reporter,
        folder: OutputFolder | None = None,
    ):
        self.recipe = recipe
        self.folder = folder  # the claimed run folder (main rank), which records what is written
        self.run_dir = run_dir
        self.runtime = runtime
        self.parts = parts
        self.data = data
        self.step_fn = TrainStep(
            parts.model, parts.criterion, parts.optimizer, runtime, recipe.train.grad_clip
        )
        self.loader = loader  # P×K identity batches (see reidcli.data.loaders)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.reporter = reporter
        self.best: dict = {}
        self.last_val: dict = {}
        # Sum and count of the step losses of the current epoch (kept across a resume), so the
        # epoch loss logged is the mean over all of the epoch's steps.
        self.loss_sum, self.loss_steps = 0.0, 0
        self.epoch_loss, self.epoch_rate = 0.0, 0.0  # of the epoch that just ended

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly where the run stands."""
        return {
            "model": self.parts.bare_model.state_dict(),
            "criterion": self.parts.criterion.state_dict(),
            "optimizer": self.parts.optimizer.state_dict(),
            "scheduler": self.parts.scheduler.state_dict(),
            "scaler": self.step_fn.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "epoch_loss_sum": self.loss_sum,
            "epoch_loss_steps": self.loss_steps,
            "rng": rng_state(),
            "best": self.best,
            "recipe": json.dumps(self.recipe.to_dict()),
            "num_classes": self.data.num_classes,
            "model_name": self.recipe.model.name,
            "world_size": self.runtime.world_size,
        }

    def restore(self, state: dict) -> None:
        if state["num_classes"] != self.data.num_classes:
            raise TrainingError(
                f"checkpoint has {state['num_classes']} classes, the dataset has "
                f"{self.data.num_classes}; resume with the dataset the run started on"
            )
        saved = state.get("world_size")  # absent in checkpoints written before it was recorded
        if saved is not None and saved != self.runtime.world_size:
            raise TrainingError(
                f"this run trained with {saved} process(es) and is resumed with "
                f"{self.runtime.world_size}: the batch sequence and the global batch depend on "
                f"the number of processes, so resume it with {saved} (torchrun "
                f"--nproc-per-node/--nnodes giving a world size of {saved})"
            )
        self.parts.bare_model.load_state_dict(state["model"])
        self.parts.criterion.load_state_dict(state["criterion"])
        self.parts.optimizer.load_state_dict(state["optimizer"])
        self.parts.scheduler.load_state_dict(state["scheduler"])
        self.step_fn.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.step, self.best = state["step"], dict(state.get("best") or {})
        self.loss_sum = float(state.get("epoch_loss_sum", 0.0))
        self.loss_steps = int(state.get("epoch_loss_steps", 0))
        set_rng_state(state["rng"])

    def save(self, name: str = "last.pt") -> None:
        if self.runtime.is_main:
            if self.folder is not None:
                logs = [p for sub in LOG_FOLDERS for p in (self.run_dir / sub).rglob("*")]
                names = [p.relative_to(self.run_dir).as_posix() for p in logs if p.is_file()]
                self.folder.own(name, *names)
            save_checkpoint(self.run_dir / name, self.state_dict())

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        cfg = self.recipe.train
        tracker = Tracker(self.run_dir, cfg, self.recipe.to_dict(), enabled=self.runtime.is_main)
        progress = EpochProgress(self.reporter)
        status, signal_name = "completed", None
        try:
            with StopRequest() as stop:
                while self.epoch < cfg.epochs:
                    self._run_epoch(tracker, progress, stop)
                    self._end_epoch(tracker, progress)
        except Interrupted:
            status, signal_name = "interrupted", stop.signal_name
            progress.message(
                f"{signal_name}: saved {self.run_dir / 'last.pt'} at epoch {self.epoch + 1}, "
                f"batch {self.batch_in_epoch}; continue with --resume"
            )
        except NonFiniteLoss as err:
            tracker.write("error", self.step, {"epoch": self.epoch, "message": str(err)})
            raise
        finally:
            tracker.close()
        return TrainResult(
            str(self.run_dir), status, self.epoch, self.step, self.best, self.last_val,
            signal_name,
        )  # fmt: skip

    def _run_epoch(self, tracker: Tracker, progress: EpochProgress, stop: StopRequest) -> None:
        cfg, parts = self.recipe.train, self.parts
        sampler = self.loader.batch_sampler
        sampler.set_epoch(self.epoch)
        accum = cfg.grad_accum
        total_steps = len(sampler) // accum  # the whole epoch's steps, before any resume offset
        sampler.set_epoch(self.epoch, self.batch_in_epoch)
        progress.start_epoch(self.epoch, cfg.epochs, total_steps, self.batch_in_epoch // accum)
        reset_peak_memory(self.runtime.device)
        parts.model.train()
        pending: list = []
        loss = 0.0
        for micro_batch in self._batches():
            pending.append(micro_batch)
            if len(pending) < accum:
                continue
            stats = self.step_fn(pending, self.step)
            pending = []
            self.step += 1
            self.batch_in_epoch += accum
            loss = stats.loss
            self.loss_sum += loss
            self.loss_steps += 1
            if parts.scheduler.per == "iteration":
                parts.scheduler.step()
            lr = parts.optimizer.param_groups[0]["lr"]
            progress.advance(stats.images * self.runtime.world_size, loss, stats.parts, lr)
            if self.step % cfg.log_every == 0:
                record = {"epoch": self.epoch, "loss": loss, "lr": lr, **stats.parts}
                tracker.write("train", self.step, record)
            every = cfg.checkpoint.every_steps
            if every and self.step % every == 0 and self.batch_in_epoch < total_steps * accum:
                self.save()
            if stop.requested(self.runtime.distributed, self.runtime.device):
                progress.end_epoch(self.epoch, cfg.epochs, self._mean_loss(), lr)
                self.save()
                raise Interrupted("stopped")
            if self.batch_in_epoch >= total_steps * accum:
                break
        self.epoch_loss = self._mean_loss()
        self.loss_sum, self.loss_steps = 0.0, 0
        self.epoch_rate = progress.end_epoch(
            self.epoch, cfg.epochs, self.epoch_loss, parts.optimizer.param_groups[0]["lr"]
        )

    def _batches(self):
        """(images, labels) micro-batches of the current epoch, from its position on."""
        for batch in clean_errors(self.loader):
            yield images_and_labels(batch)

    def _mean_loss(self) -> float:
        """Mean step loss of the current epoch so far, averaged over the ranks."""
        if not self.runtime.distributed:
            return self.loss_sum / max(self.loss_steps, 1)
        import torch
        import torch.distributed as dist

        totals = torch.tensor(
            [self.loss_sum, float(self.loss_steps)], dtype=torch.float64, device=self.runtime.device
        )
        dist.all_reduce(totals)
        return float(totals[0] / totals[1].clamp(min=1))

    def _end_epoch(self, tracker: Tracker, progress: EpochProgress) -> None:
        cfg, parts = self.recipe.train, self.parts
        self.epoch += 1
        self.batch_in_epoch = 0
        if parts.scheduler.per == "epoch":
            parts.scheduler.step()
        tracker.write(
            "epoch",
            self.step,
            {
                "epoch": self.epoch,
                "loss": self.epoch_loss,
                "images_per_s": self.epoch_rate,
                "peak_memory_mb": round(peak_memory_mb(self.runtime.device), 1),
            },
        )
        improved = False
        due = cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs)
        if due and self.data.val_query is not None:
            metrics = validate(parts.bare_model, self.recipe, self.data, self.runtime)
            self.last_val = {"epoch": self.epoch, **metrics}
            tracker.write("val", self.step, self.last_val)
            progress.message(
                f"validation after epoch {self.epoch}: mAP {metrics['mAP']:.4f}, "
                f"rank-1 {metrics['rank1']:.4f}"
            )
            improved = not self.best or metrics["mAP"] > self.best["mAP"]
            if improved:
                self.best = dict(self.last_val)
        # last.pt comes last: a run killed before it resumes from the epoch before and writes
        # best.pt and epoch_NNN.pt again, identically.
        if improved and cfg.checkpoint.save_best:
            self.save("best.pt")
        if cfg.checkpoint.keep_epochs:
            self.save(f"epoch_{self.epoch:03d}.pt")
        self.save()
        self.runtime.barrier()
