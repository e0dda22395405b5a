"""The contract between a training method and the one training loop.

A method turns data items into batches and batches into a loss. The loop
(:func:`tunelab.train.loop.train`) owns everything else: device placement, precision, the
optimizer and schedule, gradient accumulation and clipping, non-finite step handling,
evaluation, checkpoints and resume, metrics, plots and progress.

Offline methods (SFT, reward, DPO, ORPO, KTO) only implement ``build_datasets``, ``collate``
and ``loss``: the loop samples micro-batches from the training items with a seeded,
resumable sampler. Online methods (PPO) override ``next_micro_batches`` to generate their own
data (rollouts) and keep what must survive a resume in ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

Batch = dict[str, Any]


@dataclass
class Datasets:
    """What a method prepares before training: items are whatever its ``collate`` accepts."""

    train: Sequence[Any]
    validation: Sequence[Any]
    report: dict[str, Any] = field(default_factory=dict)  # JSON-able; saved as <run>/data_report.json


class Method:
    """Base class of every method; see the module docstring for the contract.

    Subclasses set ``name`` and are listed in :data:`tunelab.methods.METHODS`.
    ``self.config`` is the validated :class:`~tunelab.config.RunConfig`; method-specific
    options live in ``config.method_args`` and are validated by the subclass.
    """

    name: ClassVar[str] = "base"
    #: True when the method needs the frozen reference (adapter disabled or a second model).
    needs_reference: ClassVar[bool] = False
    #: True when its loss only calls the model's forward (so DDP can synchronise it): multi-process
    #: training (tunelab/train/distributed.py) refuses the others.
    multi_process: ClassVar[bool] = True

    def __init__(self, config, model: nn.Module, tokenizer, run_dir: Path):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir)

    # -- data -------------------------------------------------------------------------
    def build_datasets(self) -> Datasets:  # pragma: no cover - abstract
        raise NotImplementedError

    def collate(self, items: list[Any]) -> Batch:  # pragma: no cover - abstract
        """Turn a list of items into tensors (on CPU; the loop moves them to the device)."""
        raise NotImplementedError

    # -- math -------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover
        """Scalar loss of one micro-batch (mean over its tokens/pairs) and scalar metrics.

        ``batch["_weight"]`` (if the loop sets it) is not used here: the loop scales each
        micro-batch loss by its share of the step's tokens/items so that accumulation is exact.
        """
        raise NotImplementedError

    def batch_weight(self, batch: Batch) -> float:
        """How much this micro-batch counts in its step (tokens for SFT, pairs for DPO).

        The loop divides each micro-batch loss by the step total of these weights and
        multiplies by this one, so micro-batch 1 x accumulation 4 equals 4 x 1 exactly.
        """
        return 1.0

    def example_lengths(self, batch: Batch) -> list[int]:
        """Non-padding token count of each example a micro-batch trains on.

        The loop's tokens/s and model FLOPs (:mod:`tunelab.train.flops`: attention is per
        example) read it. Default: a collated ``_lengths`` list (packed rows), else the row
        sums of ``attention_mask``, else every row's full width.
        """
        if "_lengths" in batch:
            return list(batch["_lengths"])
        mask, ids = batch.get("attention_mask"), batch.get("input_ids")
        if isinstance(mask, Tensor):
            return [int(n) for n in mask.sum(-1).tolist()]
        if isinstance(ids, Tensor):
            return [int(ids.shape[-1])] * int(ids.shape[0])
        return []

    def item_length(self, item: Any) -> int:
        """Tokens one training item takes in a padded batch (``training.group_by_length`` sorts by it).

        Default: a row's ``input_ids``; a pair's prompt + its longer completion (chosen and
        rejected are padded to one width); a prompt + completion; a wrapper's ``row``.
        """
        if hasattr(item, "row"):
            return self.item_length(item.row)
        if hasattr(item, "input_ids"):
            return len(item.input_ids)
        if hasattr(item, "chosen_ids"):
            return len(item.prompt_ids) + max(len(item.chosen_ids), len(item.rejected_ids))
        return len(item.prompt_ids) + len(getattr(item, "completion_ids", ()))

    def frozen_forward_lengths(self, batch: Batch) -> list[int]:
        """Examples of ``batch`` that ``loss`` also ran through a forward without gradients
        (a reference model evaluated on the fly); counted in the step's model FLOPs."""
        return []

    # -- hooks with defaults ----------------------------------------------------------
    def before_training(self, model: nn.Module, datasets: Datasets) -> None:
        """Called once after model and data are ready (e.g. precompute reference log-probs)."""

    def next_micro_batches(self, model: nn.Module, step: int, sampler) -> list[Batch] | None:
        """Online methods return the step's micro-batches; ``None`` = sample from the data."""
        return None

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Validation metrics; default: weighted mean loss and perplexity."""
        import math

        import torch

        total, weight = 0.0, 0.0
        with torch.no_grad():
            for batch in batches:
                loss, _ = self.loss(model, batch)
                w = self.batch_weight(batch)
                total += float(loss) * w
                weight += w
        mean = total / max(weight, 1e-12)
        return {"val_loss": mean, "val_ppl": math.exp(min(mean, 50.0))}

    def state_dict(self) -> dict[str, Any]:
        """Method state that a resume must restore (JSON-able or tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def after_training(self, model: nn.Module) -> dict[str, Any]:
        """Final extra results to store in <run>/result.json (e.g. held-out accuracy)."""
        return {}
