"""Making a draft model cheap to run: a restricted output head, int8 weights, a saved runtime recipe.

Speculative decoding pays the draft once per drafted token, so on a CPU, where one decode step
is bound by reading the weights from memory, the draft must read far fewer bytes than the target
(Leviathan et al., 2023, arXiv:2211.17192, Sec. 3.4: the speedup is bounded by the cost ratio c).
Two levers that never change the target's output (greedy verification keeps only the target's
argmax; the sampling rule stays exact for any draft distribution q):

* **restricted vocabulary head** (as in FR-Spec, Zhao et al., 2025, arXiv:2502.14856): a 135M
  model's 49,152 × 576 head is 113 MB of fp32, as much as 8 decoder layers; the draft only
  proposes tokens the target actually writes, so keeping the rows of the most frequent tokens of
  the target's own generations (a few thousand) costs a few percent of the full head while
  covering almost every token. A token outside the set is simply never drafted.
* **int8 dynamic quantization** of the draft's linear layers (``torch.ao.quantization.
  quantize_dynamic``, fbgemm): a quarter of the bytes per step; the draft's proposals change a
  little, the target's verification does not.

The recipe is saved next to the draft's Hugging Face weights as :data:`RUNTIME_FILE` (the token
ids of the head, the quantization, the drafting settings), so ``tunelab draft`` measures and
``tunelab serve --draft`` serves the same draft; plain transformers still loads the folder (full
head, fp32).

Checked by ``tests/infer/test_drafting.py``: the restricted head's logits equal the full head's
rows, greedy proposals equal the full draft's whenever its argmax is in the set, the recipe
round-trips, and greedy speculative output stays identical to the target alone.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import ConfigError

RUNTIME_FILE = "draft_runtime.json"
QUANTIZE = ("none", "int8")


@dataclass
class DraftRuntime:
    """How to run a draft: its head's token ids (empty: the full vocabulary), weights, drafting rule."""

    vocab: list[int] = field(default_factory=list)
    quantize: str = "none"  # "none" | "int8" (dynamic, linear layers)
    num_draft: int = 4  # most tokens drafted per target forward
    min_confidence: float = 0.0  # stop drafting at a token the draft gives less probability than this

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"draft quantize '{self.quantize}'.\n  fix: one of {', '.join(QUANTIZE)}")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ConfigError(f"draft min_confidence {self.min_confidence}.\n  fix: a probability in [0, 1)")

    def save(self, folder: str | Path) -> None:
        (Path(folder) / RUNTIME_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, folder: str | Path) -> DraftRuntime | None:
        """The recipe saved in ``folder``, or None when it has none (a plain model used as a draft)."""
        path = Path(folder) / RUNTIME_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: not a draft runtime file ({exc}).\n  fix: rebuild it with tunelab draft"
            ) from exc


def frequent_tokens(sequences: Iterable[Sequence[int]], size: int, always: Iterable[int] = ()) -> list[int]:
    """The ``size`` most frequent token ids of ``sequences`` (ties: smaller id first) plus ``always``
    (EOS: the draft must be able to end an answer), sorted."""
    counts = Counter(t for seq in sequences for t in seq)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return sorted(set(ranked[:size]) | set(always))


def coverage(sequences: Iterable[Sequence[int]], vocab: Sequence[int]) -> float:
    """Fraction of the tokens of ``sequences`` inside ``vocab``: an upper bound of greedy acceptance."""
    allowed = set(vocab)
    total = hit = 0
    for seq in sequences:
        total += len(seq)
        hit += sum(t in allowed for t in seq)
    return hit / total if total else 0.0


def restrict_head(model, vocab: Sequence[int]):
    """Replace ``model``'s output head by its rows ``vocab`` (a new untied ``Linear``), in place.

    The model's logits then have ``len(vocab)`` entries, entry ``i`` scoring token ``vocab[i]``;
    ``model.draft_vocab`` (a ``LongTensor``) maps them back. The input embeddings are untouched.
    """
    head = model.get_output_embeddings()
    ids = torch.tensor(list(vocab), dtype=torch.long, device=head.weight.device)
    if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= head.weight.shape[0]:
        raise ConfigError(f"draft vocabulary ids outside 0..{head.weight.shape[0] - 1}.\n  fix: rebuild the draft")
    small = nn.Linear(head.weight.shape[1], ids.numel(), bias=head.bias is not None, device=ids.device)
    with torch.no_grad():
        small.weight.copy_(head.weight[ids])
        if head.bias is not None:
            small.bias.copy_(head.bias[ids])
    small.weight.requires_grad_(False)
    model.set_output_embeddings(small)
    model.draft_vocab = ids
    return model


def quantize_int8(model):
    """``model`` with its ``nn.Linear`` layers dynamically quantized to int8 (CPU only; a new module)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao, still shipped
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model.float(), {nn.Linear}, dtype=torch.qint8)
    if hasattr(model, "draft_vocab"):
        quantized.draft_vocab = model.draft_vocab
    return quantized


def prepare_draft(model, runtime: DraftRuntime | None):
    """Apply ``runtime`` to an eval-mode draft: restrict its head and attach the recipe, which the drafter
    reads (:func:`draft_state`: the lean runner, int8); returns the model."""
    if runtime is None:
        return model
    model = model.eval()
    if runtime.quantize == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ConfigError("draft quantize int8 runs on the CPU only.\n  fix: serve the draft with --device cpu")
        model = model.float()  # dynamic int8 takes fp32 activations: a draft loaded in bf16 would not run
    if runtime.vocab:
        restrict_head(model, runtime.vocab)
    model.draft_runtime = runtime
    return model


def draft_state(model):
    """The decode state a drafter runs ``model`` with: a draft prepared by :func:`prepare_draft` runs on
    :mod:`tunelab.infer.lean` (int8 if its recipe says so); any other model on transformers (``KVState``)."""
    from tunelab.infer.cache import KVState
    from tunelab.infer.lean import lean_state

    runtime = getattr(model, "draft_runtime", None)
    return KVState(model) if runtime is None else lean_state(model, runtime.quantize)


def load_draft(folder: str | Path, device: str = "auto"):
    """A draft folder (Hugging Face weights + optional :data:`RUNTIME_FILE`) ready to draft.

    An int8 recipe loads the weights in fp32, as ``tunelab draft`` saved and measured them: loaded in
    the inference dtype (bf16 where the precision probe picks it) they would be rounded to bf16
    before being quantized: a slightly different draft from the one measured, which drafted more tokens
    and reached a lower acceptance on the bundled model's held-out prompts."""
    from tunelab.config import ModelArgs
    from tunelab.models.load import load_model

    runtime = DraftRuntime.read(folder) if Path(folder).is_dir() else None
    dtype = "fp32" if runtime is not None and runtime.quantize == "int8" else "auto"
    model, _ = load_model(ModelArgs(name=str(folder), dtype=dtype), device=device)
    return prepare_draft(model.eval(), runtime)
