"""`reid adapt`: a trained model adapted to new cameras from their unlabeled crops.

The loop is the training loop's (`Trainer`: steps, checkpoints, exact resume, interrupts) with
three differences: at the start of every `adapt.recluster_every`-th epoch the target's crops are
embedded and clustered (`pseudo_labels`) and the cluster memory starts from the clusters; an
epoch's batches are P×K batches of the clustered crops (outliers sit it out), each with a
labeled source batch beside it when `adapt.source_weight` > 0; the loss is the memory's InfoNCE
(`losses.cluster_memory`). Checkpoints carry the pseudo labels and the memory, so a resumed run
continues bit-exactly as an uninterrupted one. The run folder is a training run's: `reid eval`,
`export` and `embed` take it as they take any other.
"""

import logging
import time
from pathlib import Path

import torch

from reidcli.data.loaders import build_train_loader, clean_errors
from reidcli.devices import check_device
from reidcli.engine.checkpoint import (
    check_resume_recipe,
    find_checkpoint,
    load_checkpoint,
    saved_recipe,
)
from reidcli.engine.data import RunData, images_and_labels, load_run_data
from reidcli.engine.optim import build_optimizer, build_scheduler
from reidcli.engine.pseudo_labels import PseudoLabels, cluster_target, target_frame
from reidcli.engine.run_folder import run_folder, trim_metrics
from reidcli.engine.runtime import Runtime
from reidcli.engine.setup import RunParts, feature_dims, write_run_files
from reidcli.engine.trainer import Trainer
from reidcli.errors import CheckpointError, RecipeError, TrainingError
from reidcli.losses.cluster_memory import SOURCE, TARGET, AdaptCriterion, ClusterMemory
from reidcli.losses.criterion import build_criterion
from reidcli.models.catalog import build_model
from reidcli.models.weights import load_weights
from reidcli.recipe import Recipe
from reidcli.recipe.options import AdaptOptions
from reidcli.reporting import Reporter
from reidcli.results import AdaptResult

log = logging.getLogger(__name__)


def start_adaptation(recipe, options: AdaptOptions, overrides, reporter) -> AdaptResult:
    """`reid adapt`: the recipe resolved and the run folder chosen (see `reidcli.api.adapt`)."""
    from reidcli.recipe import load_recipe, override_recipe

    check_device(options.device)
    out = options.out
    if options.resume:
        if out is None:
            raise RecipeError("resume continues a run folder: give it (out, --out RUN_DIR)")
        if not (Path(out) / "last.pt").is_file():
            raise RecipeError(f"resume: {Path(out) / 'last.pt'} does not exist")
        recipe = recipe if recipe is not None else Path(out) / "recipe.yaml"
    if recipe is None:
        raise RecipeError("missing recipe: reid adapt RECIPE [--out RUN_DIR]")
    if isinstance(recipe, Recipe):
        resolved, name = override_recipe(recipe, overrides), "adapt"
    else:
        resolved, name = load_recipe(recipe, overrides), Path(recipe).stem
    if resolved.adapt is None:
        raise RecipeError(
            "the recipe has no adapt section: give at least adapt.source (the trained run) and "
            "adapt.target (the prepared unlabeled crops), e.g. --set adapt.source=RUN"
        )
    if out is None:
        out = str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return adapt(resolved, options.model_copy(update={"out": out}), reporter)


def adapt(recipe: Recipe, options: AdaptOptions, reporter: Reporter | None = None) -> AdaptResult:
    """Adapt the source model to the target crops as the recipe's `adapt` section says.

    Everything that can be refused is checked before the run folder is written: the source
    checkpoint (model and input size must be the recipe's), the target crops, and the first
    clustering (a clustering that finds no cluster names the eps that would help).

    Raises:
        CheckpointError: the source is missing, not a reid checkpoint, or of another model or
            input size.
        DatasetError: the target folder is missing, empty or unreadable.
        TrainingError: no cluster found, a non-finite loss, a refused resume.
        OutputError, InUseError: the run folder cannot be written now.
    """
    cfg = recipe.train
    reporter = reporter or Reporter()
    runtime = Runtime.from_env(
        options.device, cfg.amp, cfg.channels_last, cfg.seed, cfg.deterministic
    )
    try:
        if runtime.distributed:
            raise TrainingError("reid adapt runs in one process; start it without torchrun")
        run_dir = Path(options.out or ".")
        state = load_checkpoint(run_dir / "last.pt") if options.resume else None
        if state is not None:
            check_resume_recipe(saved_recipe(state, run_dir / "last.pt"), recipe)
        target = target_frame(recipe)
        source_state, num_classes = load_source(recipe)
        trainer = _build(recipe, run_dir, runtime, reporter, target, source_state, num_classes)
        if state is not None:
            trainer.restore(state)
        else:
            trainer.pseudo = cluster_target(
                trainer.parts.bare_model, target, recipe, runtime, reporter, epoch=0
            )
        with run_folder(run_dir, runtime, state is not None, options.overwrite) as folder:
            trainer.folder = folder
            write_run_files(run_dir, recipe, runtime, resumed=state is not None)
            trimmed = trim_metrics(run_dir / "metrics.jsonl", trainer.step, trainer.epoch)
            if trimmed:
                log.warning(
                    "metrics.jsonl: dropped %d record(s) written after the checkpoint", trimmed
                )
            result = trainer.fit()
        return AdaptResult(**vars(result), clusters=trainer.pseudo.summary())
    finally:
        runtime.close()


def load_source(recipe: Recipe) -> tuple[dict, int]:
    """The source checkpoint's model state and class count, checked against the recipe.

    Raises:
        CheckpointError: not found, not a reid checkpoint, another model or input size.
    """
    path = find_checkpoint(recipe.adapt.source)
    saved = load_checkpoint(path)
    source = saved_recipe(saved, path)
    model, data = source.get("model", {}), source.get("data", {})
    if model.get("name") != recipe.model.name:
        raise CheckpointError(
            f"{path}: the source is a {model.get('name')} model and the recipe's model.name is "
            f"{recipe.model.name}; set model.name to the source's"
        )
    size = (data.get("height"), data.get("width"))
    if size != (recipe.data.height, recipe.data.width):
        raise CheckpointError(
            f"{path}: the source was trained on {size[0]}x{size[1]} inputs and the recipe says "
            f"{recipe.data.height}x{recipe.data.width}; set data.height and data.width to the "
            "source's"
        )
    return saved["model"], int(saved["num_classes"])


def _build(recipe, run_dir, runtime, reporter, target, source_state, num_classes) -> "AdaptTrainer":
    model_cfg = recipe.model.model_copy(update={"pretrained": "none"})
    model = build_model(model_cfg, num_classes)
    load_weights(model, source_state, strict_classifier=True)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    source_data = source_loader = source_criterion = None
    if recipe.adapt.source_weight > 0:
        source_data = load_run_data(recipe)
        if source_data.num_classes != num_classes:
            raise TrainingError(
                f"adapt.source_weight: {recipe.data.root} has {source_data.num_classes} training "
                f"identities and the source model {num_classes}; point data.root at the dataset "
                "the source was trained on"
            )
        source_loader = build_train_loader(source_data.train, recipe.data, seed=recipe.train.seed)
        source_criterion = build_criterion(
            recipe.loss, num_classes, feature_dims(model, recipe, runtime)
        )
    memory = recipe.adapt.memory
    criterion = AdaptCriterion(
        ClusterMemory(model.embedding_dim, memory.temperature, memory.momentum),
        source_criterion,
        recipe.adapt.source_weight,
    ).to(runtime.device)
    optimizer = build_optimizer(recipe.optim, model, criterion)
    scheduler = build_scheduler(
        recipe.schedule, optimizer, epochs=recipe.train.epochs, iters_per_epoch=1
    )
    step_model = torch.compile(model) if recipe.train.compile else model
    parts = RunParts(step_model, model, criterion, optimizer, scheduler)
    data = RunData(target, None, None, num_classes)
    return AdaptTrainer(recipe, run_dir, runtime, parts, data, reporter, source_loader)


class AdaptTrainer(Trainer):
    """The training loop over pseudo identities (see the module docstring).

    Attributes:
        pseudo: the clusters the current epoch trains on.
        source_position: (epoch, batch) of the next labeled source batch.
    """

    def __init__(self, recipe, run_dir, runtime, parts, data, reporter, source_loader=None):
        super().__init__(recipe, run_dir, runtime, parts, data, None, reporter)
        self.pseudo: PseudoLabels | None = None
        self.source_loader = source_loader
        self.source_position = (0, 0)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["adapt"] = {
            "labels": torch.from_numpy(self.pseudo.labels),
            "eps": self.pseudo.eps,
            "clustered_epoch": self.pseudo.epoch,
            "source_position": list(self.source_position),
        }
        return state

    def restore(self, state: dict) -> None:
        if "adapt" not in state:
            raise TrainingError(
                "the checkpoint is not one of reid adapt: resume it with reid train"
            )
        super().restore(state)
        saved = state["adapt"]
        self.pseudo = PseudoLabels(
            saved["labels"].numpy(), float(saved["eps"]), int(saved["clustered_epoch"])
        )
        self.source_position = tuple(saved["source_position"])

    def _run_epoch(self, tracker, progress, stop) -> None:
        adapt = self.recipe.adapt
        if self.batch_in_epoch == 0:
            due = self.epoch % adapt.recluster_every == 0 and self.pseudo.epoch != self.epoch
            if due:
                self.pseudo = cluster_target(
                    self.parts.bare_model, self.data.train, self.recipe, self.runtime,
                    self.reporter, self.epoch,
                )  # fmt: skip
            if self.pseudo.centroids is not None:
                self.parts.criterion.memory.reset(self.pseudo.centroids)
                self.pseudo.centroids = None
            stats = {"epoch": self.epoch + 1, "reclustered": self.pseudo.epoch == self.epoch}
            tracker.write("clusters", self.step, {**stats, **self.pseudo.summary()})
        frame = self.data.train.assign(label=self.pseudo.labels)
        self.loader = build_train_loader(
            frame[frame["label"] >= 0], self.recipe.data, seed=self.recipe.train.seed
        )
        super()._run_epoch(tracker, progress, stop)

    def _batches(self):
        """Target batches labeled (TARGET, cluster), each followed by a source batch
        (SOURCE, label) when there is a source loader."""
        sources = self._source_batches() if self.source_loader is not None else None
        for batch in clean_errors(self.loader):
            images, labels = images_and_labels(batch)
            labels = torch.stack([torch.full_like(labels, TARGET), labels], 1)  # (B, 2)
            if sources is not None:
                source_images, source_labels = next(sources)
                both = torch.stack([torch.full_like(source_labels, SOURCE), source_labels], 1)
                images, labels = torch.cat([images, source_images]), torch.cat([labels, both])
            yield images, labels

    def _source_batches(self):
        """Labeled source batches from `source_position` on, epoch after epoch."""
        sampler = self.source_loader.batch_sampler
        while True:
            epoch, batch = self.source_position
            sampler.set_epoch(epoch, batch)
            for item in clean_errors(self.source_loader):
                self.source_position = (self.source_position[0], self.source_position[1] + 1)
                yield images_and_labels(item)
            self.source_position = (epoch + 1, 0)
