"""The frozen reference policy of DPO-style methods and KTO, and its optional precomputed cache.

Three sources, in order of preference:

1. a peft adapter is trained: the reference is the same model with the adapter disabled
   (no second copy of the base weights, as TRL does for a fresh adapter);
2. full fine-tuning: a frozen copy of the starting model, loaded once;
3. ``precompute_reference: true``: either of the above is run once over the whole dataset
   before training, and the log-probs are cached in ``<run>/reference_logps.safetensors`` so a
   resumed run reuses them; during training no reference forward runs at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from tunelab.methods.logprobs import completion_logps, is_peft, reference_mode

CACHE_FILE = "reference_logps.safetensors"


def loop_autocast(config, device: torch.device):
    """The autocast the loop uses, so cached reference log-probs match on-the-fly ones."""
    choice = config.training.precision
    if choice == "fp32":
        return contextlib.nullcontext()
    if choice == "fp16" or (choice == "auto" and device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        return torch.autocast(device.type, dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Reference:
    """Reference log-probs for ``completion_logps``-style batches."""

    def __init__(self, config, model: nn.Module):
        self.frozen: nn.Module | None = None
        if not is_peft(model):
            from tunelab.models.load import load_model

            device = next(model.parameters()).device
            self.frozen, _ = load_model(config.model, None, for_training=False, device=device.type)
            for p in self.frozen.parameters():
                p.requires_grad_(False)

    def logps(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """(B,) summed completion log-probs under the reference; no gradient."""
        if self.frozen is not None:
            with torch.no_grad():
                return completion_logps(self.frozen, batch)[0]
        with reference_mode(model) as ref:
            return completion_logps(ref, batch)[0]


def precompute(
    reference: Reference,
    model: nn.Module,
    config,
    run_dir: Path,
    splits: dict[str, Sequence],
    collate: Callable[[list], dict[str, Tensor]],
    columns: Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]],
    store: Callable[[object, dict[str, float]], None],
) -> None:
    """Fill every item's reference log-probs once (or from the run folder's cache).

    Args:
        splits: name -> items (train, validation).
        collate: items -> a batch with the sequences whose reference log-probs are needed.
        columns: (batch, (N,) log-probs of its sequences) -> named per-item columns (each (B,)).
        store: writes one item's named values (e.g. ``ref_chosen``) into the item.
    """
    from safetensors.torch import load_file, save_file

    path = Path(run_dir) / CACHE_FILE
    cached = load_file(str(path)) if path.is_file() else {}
    device = next(model.parameters()).device
    out: dict[str, Tensor] = {}
    mbs = config.training.micro_batch_size
    for split, items in splits.items():
        names = [k for k in cached if k.startswith(f"{split}.")]
        if names and all(cached[k].shape[0] == len(items) for k in names):
            values = {k.split(".", 1)[1]: cached[k] for k in names}
        else:
            parts: list[dict[str, Tensor]] = []
            for i in range(0, len(items), mbs):
                batch = {k: v.to(device) for k, v in collate(list(items[i : i + mbs])).items()}
                with loop_autocast(config, device):
                    parts.append(columns(batch, reference.logps(model, batch).float().cpu()))
            values = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        for j, item in enumerate(items):
            store(item, {k: float(v[j]) for k, v in values.items()})
        out.update({f"{split}.{k}": v.contiguous() for k, v in values.items()})
    save_file(out, str(path))
