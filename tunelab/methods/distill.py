"""Knowledge distillation: train a student on a frozen teacher's token distributions.

Papers: Hinton et al., 2015 ("Distilling the Knowledge in a Neural Network", arXiv:1503.02531:
softened targets, the T² scale, the mix with the hard-label loss); Gu et al., 2024 (MiniLLM,
arXiv:2306.08543: reverse KL); Agarwal et al., 2024 (GKD, arXiv:2306.13649: generalized JSD).

Intuition: a one-hot label says which token came next; the teacher's distribution also says
how plausible every other token was, which is far more signal per token for a smaller student.
On the SFT data (same rendering, packing and label masks as ``method: sft``) the loss at every
trained position (label != -100) is

    loss = alpha * CE(student, label) + (1 - alpha) * T² * D(p_T^τ, p_S^τ)

with ``D`` forward KL, reverse KL or generalized JSD (:mod:`tunelab.methods.distill_losses`)
between the temperature-softened teacher and student distributions, averaged over trained tokens.

The teacher (``method_args.teacher``: a model name, folder or run) is loaded once, frozen
(``requires_grad=False``), in eval mode, and runs under ``torch.inference_mode``; it may have
another size or depth than the student but must share its tokenizer (checked before any weight
loads). With ``teacher_logits: cache`` it runs once before training: per trained token its
top-k log-probs and the log of the rest mass go to ``<run>/teacher_topk.safetensors`` (8·k + 4
bytes per trained token), reused by every epoch and on resume, and the teacher is then released.
The cached loss compares the two distributions over k + 1 buckets (top-k tokens + the rest,
see :func:`~tunelab.methods.distill_losses.topk_buckets`): exact when k equals the vocabulary,
a lower bound of the full divergence otherwise.

Only trained positions reach the student's output head (as in SFT). ``vocab`` restricts both
distributions to a list of token ids: the student's head keeps their rows and the teacher is
conditioned on them (its softmax over those ids); labels outside get no cross-entropy. This is for
a student that will only ever be asked for those tokens, a speculative draft with a restricted head
(:mod:`tunelab.compress.draft`): training then sees the distribution serving uses, and the head
costs |vocab|/V of its FLOPs.

Checked by: ``tests/methods/test_distill_losses.py`` (hand-computed values; TRL's
``generalized_jsd_loss``), ``tests/methods/test_distill.py`` (teacher frozen and untouched, the
student's KL to the teacher on held-out data falls, cache with k = V equals online, resume
reuses the cache, vocabulary mismatch is a ConfigError).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.data.types import Row
from tunelab.errors import ConfigError
from tunelab.methods.args import parse_method_args
from tunelab.methods.base import Batch, Datasets
from tunelab.methods.distill_losses import DIVERGENCES, teacher_topk, topk_buckets
from tunelab.methods.sft import SFT

CACHE_FILE = "teacher_topk.safetensors"
MODEL_INPUTS = ("input_ids", "position_ids", "attention_mask")
CACHE_KEYS = ("teacher_ids", "teacher_logp", "teacher_rest")


@dataclass(frozen=True)
class Indexed:
    """A training row and where its cached teacher values are (split, index in the split)."""

    split: str
    index: int
    row: Row


def check_same_vocabulary(student_model, student_tok, teacher_model, teacher_tok, teacher: str) -> None:
    """Refuse a teacher whose vocabulary is not the student's (sizes, then the token → id maps).

    Distillation compares the two distributions id by id, so a teacher with another tokenizer
    would teach the wrong tokens without any error.

    Args:
        student_model, teacher_model: anything with ``config.vocab_size`` (models or configs).

    Raises:
        ConfigError: naming ``method_args.teacher`` and both vocabularies.
    """
    s_config = getattr(student_model, "config", student_model)
    t_config = getattr(teacher_model, "config", teacher_model)
    sizes = (int(s_config.vocab_size), int(t_config.vocab_size))
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sizes[0] == sizes[1] and s_vocab == t_vocab:
        return
    if sizes[0] != sizes[1] or len(s_vocab) != len(t_vocab):
        what = (
            f"the student's vocabulary has {sizes[0]} ids ({len(s_vocab)} tokens), "
            f"the teacher's {sizes[1]} ({len(t_vocab)})"
        )
    else:
        token = next(t for t in sorted(s_vocab) if t_vocab.get(t) != s_vocab[t])
        what = (
            f"same size ({sizes[0]}) but different tokens: {token!r} is id {s_vocab[token]} for the student, "
            f"{t_vocab.get(token)} for the teacher"
        )
    raise ConfigError(
        f"method_args.teacher: '{teacher}' does not share the student's tokenizer: {what}. Distillation "
        "compares the two next-token distributions id by id.\n"
        "  fix: use a teacher from the student's model family (same tokenizer), or build the student from "
        "the teacher (e.g. `tunelab draft TEACHER`)"
    )


class Distill(SFT):
    name = "distill"

    def __init__(self, config, model: nn.Module, tokenizer, run_dir: Path):
        super().__init__(config, model, tokenizer, run_dir)
        self.args = parse_method_args("distill", config.method_args)
        self.divergence = DIVERGENCES.get(self.args.loss)
        self.device = next(model.parameters()).device
        self._teacher: nn.Module | None = None
        self.cache: dict[str, dict[str, Tensor]] = {}
        self._check_teacher_vocabulary()
        self.vocab, self.vocab_index = self._restricted_vocabulary()

    # -- teacher ------------------------------------------------------------------------
    def _check_teacher_vocabulary(self) -> None:
        """Compare vocabularies from the teacher's config and tokenizer, before its weights load."""
        from transformers import AutoConfig

        from tunelab.models.load import load_tokenizer
        from tunelab.models.resolve import resolve_model

        path = resolve_model(self.args.teacher).path
        trust = self.config.model.trust_remote_code
        teacher_config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust)
        teacher_config = getattr(teacher_config, "text_config", None) or teacher_config
        check_same_vocabulary(
            self.model, self.tokenizer, teacher_config, load_tokenizer(path, trust_remote_code=trust), self.args.teacher
        )

    def _restricted_vocabulary(self) -> tuple[Tensor | None, Tensor | None]:
        """``(ids, index)`` of ``method_args.vocab``: the kept ids, and for every id its position
        among them (-1 outside); ``(None, None)`` for the whole vocabulary."""
        if self.args.vocab is None:
            return None, None
        size = int(getattr(self.model.config, "vocab_size", 0) or 0)
        if size and max(self.args.vocab) >= size:
            raise ConfigError(
                f"method_args.vocab: token id {max(self.args.vocab)} is outside the student's vocabulary "
                f"of {size} ids.\n"
                "  fix: list ids of the student's tokenizer"
            )
        ids = torch.tensor(self.args.vocab, dtype=torch.long, device=self.device)
        index = torch.full((max(size, int(ids.max()) + 1),), -1, dtype=torch.long, device=self.device)
        index[ids] = torch.arange(len(ids), device=self.device)
        return ids, index

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher, loaded on first use (a cached run never loads it)."""
        if self._teacher is None:
            from tunelab.models.load import load_model

            args = self.config.model.model_copy(update={"name": self.args.teacher})
            teacher, _ = load_model(args, None, for_training=False, device=self.device.type)
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            self._teacher = teacher
        return self._teacher

    def teacher_logp(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """(N, V) temperature-scaled teacher log-probs at the ``mask`` positions, without autograd."""
        with torch.inference_mode():
            logits = self.teacher(**inputs, use_cache=False).logits
            logits = logits[:, -mask.shape[1] - 1 : -1][mask].float()  # predicts the trained tokens
            if self.vocab is not None:  # the teacher conditioned on the kept tokens
                logits = logits[:, self.vocab]
            logp = torch.log_softmax(logits / self.args.temperature, dim=-1)
        return logp.clone()  # a normal tensor: inference tensors cannot be saved for backward

    # -- data ---------------------------------------------------------------------------
    def build_datasets(self) -> Datasets:
        data = super().build_datasets()
        if self.args.teacher_logits == "online":
            return data
        train = [Indexed("train", i, row) for i, row in enumerate(data.train)]
        validation = [Indexed("validation", i, row) for i, row in enumerate(data.validation)]
        return Datasets(train, validation, data.report)

    def collate(self, items: list) -> Batch:
        if not items or not isinstance(items[0], Indexed):
            return super().collate(items)
        batch = super().collate([it.row for it in items])
        for key in CACHE_KEYS:
            parts = []
            for it in items:
                split = self.cache[it.split]
                start, end = int(split["offsets"][it.index]), int(split["offsets"][it.index + 1])
                parts.append(split[key][start:end])
            batch[key] = torch.cat(parts)
        batch["teacher_ids"] = batch["teacher_ids"].long()
        return batch

    def before_training(self, model: nn.Module, datasets: Datasets) -> None:
        if self.args.teacher_logits == "cache":
            splits = {"train": datasets.train, "validation": datasets.validation}
            self.cache = fill_cache(self, splits)
            self._teacher = None  # every value it would give is cached

    def after_training(self, model: nn.Module) -> dict[str, Any]:
        return {"teacher_cache": cache_size(self.cache)} if self.cache else {}

    # -- math ---------------------------------------------------------------------------
    def student_logits(self, model: nn.Module, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """(N, V) fp32 student logits at the ``mask`` positions (V: the kept tokens with ``vocab``).

        Only those positions reach the output head (prompt and padding rows never do, as in SFT's
        :func:`~tunelab.methods.lm_loss.next_token_logps`), and with ``vocab`` only the head's kept rows.
        """
        from tunelab.methods.lm_loss import trained_outputs

        selected, head = trained_outputs(model, inputs, mask)
        if head is None:  # real logits: a head that cannot be applied separately
            return (selected if self.vocab is None else selected[:, self.vocab]).float()
        weight, bias = head.weight, head.bias
        if self.vocab is not None:
            weight, bias = weight[self.vocab], None if bias is None else bias[self.vocab]
        return F.linear(selected, weight, bias).float()

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        labels = batch["labels"]
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        mask = labels[:, 1:] != -100  # (B, T-1) positions whose next token is trained
        student = self.student_logits(model, inputs, mask)  # (N, V)
        targets = labels[:, 1:][mask]
        if self.vocab_index is not None:  # labels outside the kept tokens get no cross-entropy
            targets = self.vocab_index[targets]
        temperature = self.args.temperature
        student_logp = torch.log_softmax(student / temperature, dim=-1)
        if "teacher_ids" in batch:
            s, t = topk_buckets(student_logp, batch["teacher_ids"], batch["teacher_logp"], batch["teacher_rest"])
        else:
            s, t = student_logp, self.teacher_logp(inputs, mask)
        teacher_top = batch["teacher_ids"][:, 0] if "teacher_ids" in batch else t.argmax(-1)  # top-k is sorted
        count = mask.sum().clamp(min=1)
        divergence = self.divergence.fn(s, t, self.args.beta).sum() / count
        nll = F.cross_entropy(student, targets, reduction="sum", ignore_index=-1) / (targets >= 0).sum().clamp(min=1)
        alpha = self.args.alpha
        loss = alpha * nll + (1.0 - alpha) * temperature**2 * divergence
        metrics = {
            "trained_tokens": float(mask.sum()),
            "divergence": float(divergence.detach()),
            "nll": float(nll.detach()),
            # how often the student's top token is the teacher's: a draft's first-token acceptance, teacher-forced
            "agreement": float((student.argmax(-1) == teacher_top).float().mean()) if len(student) else 0.0,
        }
        return loss, metrics

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Token-weighted means: ``val_loss``, ``val_divergence`` (the student's divergence from
        the teacher at the training temperature), ``val_nll`` and ``val_ppl`` on the labels, and
        ``val_agreement`` (share of positions where the two distributions' top tokens agree)."""
        import math

        sums = {"loss": 0.0, "divergence": 0.0, "nll": 0.0, "agreement": 0.0}
        count = 0.0
        with torch.no_grad():
            for batch in batches:
                loss, m = self.loss(model, batch)
                values = {**m, "loss": float(loss)}
                for key in sums:
                    sums[key] += values[key] * m["trained_tokens"]
                count += m["trained_tokens"]
        mean = {f"val_{k}": v / max(count, 1.0) for k, v in sums.items()}
        return {**mean, "val_ppl": math.exp(min(mean["val_nll"], 50.0))}


# --------------------------------------------------------------------------- top-k cache


def _fingerprint(method: Distill) -> str:
    """What the cached values depend on besides the tokens: teacher files, k, T, autocast dtype."""
    from tunelab.methods.reference import _file_stamps, loop_autocast
    from tunelab.models.resolve import resolve_model

    dtype = getattr(loop_autocast(method.config, method.device), "fast_dtype", None)
    facts = {
        "version": 1,
        "teacher": method.args.teacher,
        "teacher_files": _file_stamps(Path(resolve_model(method.args.teacher).path)),
        "teacher_model_args": method.config.model.model_dump(mode="json", exclude={"name"}),
        "top_k": method.args.top_k,
        "temperature": method.args.temperature,
        "autocast": str(dtype) if dtype is not None else "fp32",
    }
    if method.args.vocab is not None:  # the teacher's values are conditioned on these ids
        facts["vocab"] = method.args.vocab
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _split_values(method: Distill, batches: list[Batch]) -> dict[str, Tensor]:
    """Teacher top-k ids, log-probs and rest mass of every trained token of a split, in order."""
    from tunelab.methods.reference import loop_autocast

    ids, logp, rest, counts = [], [], [], [0]
    for cpu_batch in batches:
        batch = {k: cpu_batch[k].to(method.device) for k in ("labels", *MODEL_INPUTS) if k in cpu_batch}
        mask = batch["labels"][:, 1:] != -100
        with loop_autocast(method.config, method.device):
            teacher = method.teacher_logp({k: batch[k] for k in MODEL_INPUTS if k in batch}, mask)
        top_ids, top_logp, top_rest = teacher_topk(teacher, method.args.top_k)
        ids.append(top_ids.to(torch.int32).cpu())
        logp.append(top_logp.cpu())
        rest.append(top_rest.cpu())
        counts += mask.sum(dim=1).tolist()  # trained tokens per row, in row order
    offsets = torch.tensor(counts, dtype=torch.long).cumsum(0)
    return {
        "teacher_ids": torch.cat(ids),
        "teacher_logp": torch.cat(logp),
        "teacher_rest": torch.cat(rest),
        "offsets": offsets,
    }


def fill_cache(method: Distill, splits: dict[str, list[Indexed]]) -> dict[str, dict[str, Tensor]]:
    """Every split's teacher top-k values: from ``<run>/teacher_topk.safetensors`` when its key
    (tokens + :func:`_fingerprint`) matches, else computed with the teacher and saved (atomically)."""
    from safetensors.torch import save_file

    from tunelab.methods.reference import _read_cache, _tokens_key

    path = method.run_dir / CACHE_FILE
    cached, keys = _read_cache(path)
    fingerprint = _fingerprint(method)
    out: dict[str, dict[str, Tensor]] = {}
    new_keys: dict[str, str] = {}
    mbs = method.config.training.micro_batch_size
    for split, items in splits.items():
        if not items:
            continue
        rows = [it.row for it in items]
        batches = [SFT.collate(method, rows[i : i + mbs]) for i in range(0, len(rows), mbs)]
        new_keys[split] = _tokens_key(fingerprint, batches)
        names = [k for k in cached if k.startswith(f"{split}.")]
        if names and keys.get(split) == new_keys[split]:
            out[split] = {k.split(".", 1)[1]: cached[k] for k in names}
        else:
            out[split] = _split_values(method, batches)
    if new_keys == {s: keys.get(s) for s in new_keys}:
        return out  # every split came from the file: leave it as it is
    tensors = {f"{split}.{k}": v.contiguous() for split, values in out.items() for k, v in values.items()}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=new_keys)
    tmp.replace(path)
    return out


def cache_size(cache: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
    """Trained tokens and bytes of a filled cache (what keeps the disk small)."""
    tokens = sum(int(v["offsets"][-1]) for v in cache.values())
    size = sum(t.numel() * t.element_size() for v in cache.values() for t in v.values())
    return {"trained_tokens": tokens, "bytes": size}
