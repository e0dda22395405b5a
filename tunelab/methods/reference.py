"""The frozen reference policy of DPO-style methods and KTO, and its optional precomputed cache.

Three sources, in order of preference:

1. a peft adapter is trained: the reference is the same model with the adapter disabled
   (no second copy of the base weights, as TRL does for a fresh adapter);
2. full fine-tuning: a frozen copy of the starting model, loaded once;
3. ``precompute_reference: true``: either of the above is run once over the whole dataset
   before training, and the log-probs are cached in ``<run>/reference_logps.safetensors`` so a
   resumed run reuses them (only for the same tokens, template, model, adapter start and
   precision; see :func:`precompute`); during training no reference forward runs at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from tunelab.methods.logprobs import completion_logps, is_peft, reference_mode

CACHE_FILE = "reference_logps.safetensors"


def loop_autocast(config, device: torch.device):
    """The autocast the loop uses (the same measured choice), so cached reference log-probs match on-the-fly ones."""
    from tunelab.models.precision import choose_precision

    choice = choose_precision(config.training.precision, device.type)
    if choice.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=choice.torch_dtype)


class Reference:
    """Reference log-probs for ``completion_logps``-style batches."""

    def __init__(self, config, model: nn.Module):
        self.frozen: nn.Module | None = None
        if not is_peft(model):
            from tunelab.models.load import dtype_name, load_model

            device = next(model.parameters()).device
            # The weight dtype of the policy it is compared with (fp32 master weights on CPU).
            weights = dtype_name(config.model.dtype, device.type, for_training=True)
            args = config.model.model_copy(update={"dtype": weights})
            self.frozen, _ = load_model(args, None, for_training=False, device=device.type)
            for p in self.frozen.parameters():
                p.requires_grad_(False)

    def logps(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """(B,) summed completion log-probs under the reference; no gradient.

        Under DDP the adapter-off pass runs on the wrapped module: it has no gradient to synchronise.
        """
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(model, DistributedDataParallel):
            model = model.module
        if self.frozen is not None:
            with torch.no_grad():
                return completion_logps(self.frozen, batch)[0]
        with reference_mode(model) as ref:
            return completion_logps(ref, batch)[0]


def cache_fingerprint(config, device: str | torch.device) -> str:
    """What cached reference log-probs depend on besides the tokens, as one digest.

    The model (its settings and its files' sizes and times, so a retrained folder of the same
    name counts as new), the adapter the run starts from, the template and the autocast dtype
    the log-probs were computed under. The tokens are hashed per split by :func:`precompute`.
    """
    from tunelab.models.resolve import resolve_model

    dtype = getattr(loop_autocast(config, torch.device(device)), "fast_dtype", None)
    facts = {
        "version": 1,
        "model": config.model.model_dump(mode="json"),
        "model_files": _file_stamps(Path(resolve_model(config.model.name).path)),
        "adapter": config.adapter.model_dump(mode="json"),
        "template": config.data.template,
        "autocast": str(dtype) if dtype is not None else "fp32",
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _file_stamps(path: Path) -> list[tuple[str, int, int]]:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()]


def _tokens_key(fingerprint: str, batches: list[dict[str, Tensor]]) -> str:
    """Digest of ``fingerprint`` and the token tensors (ids, masks) of a split's batches."""
    digest = hashlib.sha256(fingerprint.encode())
    for batch in batches:
        for name, value in sorted(batch.items()):
            if isinstance(value, Tensor) and not value.is_floating_point():
                digest.update(f"{name}{tuple(value.shape)}".encode())
                digest.update(value.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_cache(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and per-split keys of a cache file (none when absent)."""
    from safetensors import safe_open

    if not path.is_file():
        return {}, {}
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


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

    A split is read from the cache only when its key matches: the digest of its tokens and of
    :func:`cache_fingerprint`. Edited data, another template, model, adapter start or precision
    recompute it (a resumed run whose data file changed must not reuse stale values).

    Args:
        splits: name -> items (train, validation).
        collate: items -> a batch with the sequences whose reference log-probs are needed.
        columns: (batch, (N,) log-probs of its sequences) -> named per-item columns (each (B,)).
        store: writes one item's named values (e.g. ``ref_chosen``) into the item.
    """
    from safetensors.torch import save_file

    path = Path(run_dir) / CACHE_FILE
    cached, keys = _read_cache(path)
    device = next(model.parameters()).device
    fingerprint = cache_fingerprint(config, device)
    out: dict[str, Tensor] = {}
    new_keys: dict[str, str] = {}
    mbs = config.training.micro_batch_size
    for split, items in splits.items():
        batches = [collate(list(items[i : i + mbs])) for i in range(0, len(items), mbs)]
        new_keys[split] = _tokens_key(fingerprint, batches)
        names = [k for k in cached if k.startswith(f"{split}.")]
        if names and keys.get(split) == new_keys[split]:
            values = {k.split(".", 1)[1]: cached[k] for k in names}
        else:
            parts: list[dict[str, Tensor]] = []
            for cpu_batch in batches:
                batch = {k: v.to(device) for k, v in cpu_batch.items()}
                with loop_autocast(config, device):
                    parts.append(columns(batch, reference.logps(model, batch).float().cpu()))
            values = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        for j, item in enumerate(items):
            store(item, {k: float(v[j]) for k, v in values.items()})
        out.update({f"{split}.{k}": v.contiguous() for k, v in values.items()})
    save_file(out, str(path), metadata=new_keys)
