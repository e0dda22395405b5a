"""Batched generation: several prompts in one forward pass per step.

Prompts are left-padded (so every row's next token sits in the last column) with an attention
mask that hides the padding and ``position_ids`` that start at 0 on each row's first real
token, so a padded row computes what it would compute alone (tested against one-by-one
generation). Each row stops on its own (EOS, stop string or length) and leaves the batch at
once: its KV-cache row, mask and positions are dropped, so a batch costs the sum of its rows'
lengths, not its size times the longest row (a batched generator that pads finished rows, like
transformers' ``generate``, keeps paying for them until the slowest row is done).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from tunelab.errors import ServeError
from tunelab.infer.cache import cache_kwarg
from tunelab.infer.decode import eos_token_ids
from tunelab.infer.sampling import make_generator, pick_token
from tunelab.infer.stream import TextAssembler
from tunelab.infer.types import FinishReason, GenerationResult, SamplingParams, Timings
from tunelab.infer.virtual import virtual_tokens


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, T), attention_mask (B, T))`` with each prompt right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), device=device)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams | None = None,
    *,
    seeds: Sequence[int | None] | None = None,
) -> list[GenerationResult]:
    """Generate for every prompt at once; row ``i`` samples with seed ``params.seed + i``, or
    ``seeds[i]`` when given (so a row's sample does not depend on which rows share its batch)."""
    from transformers import DynamicCache

    if virtual_tokens(model) is not None:  # left padding would sit between the virtual tokens and the prompt
        raise ServeError(
            "batched generation does not support prompt-tuning or prefix-tuning adapters.\n"
            "  fix: generate one prompt at a time (Generator / Engine.stream), which serves them unmerged"
        )
    params = params or SamplingParams()
    start = time.perf_counter()
    device = next(model.parameters()).device
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))
    ids, mask = left_pad(prompts, pad, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    kw = {cache_kwarg(model): cache}
    if seeds is None:
        seeds = [None if params.seed is None else params.seed + i for i in range(len(prompts))]
    elif len(seeds) != len(prompts):
        raise ServeError(f"generate_batch got {len(seeds)} seeds for {len(prompts)} prompts; pass one per prompt")
    generators = [make_generator(s, device) for s in seeds]
    assemblers = [TextAssembler(tokenizer, params.stop) for _ in prompts]
    outputs: list[list[int]] = [[] for _ in prompts]
    finish: list[FinishReason | None] = [None] * len(prompts)
    first_token_at = 0.0
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   logits_to_keep=1, **kw).logits[:, -1].float()
    active = list(range(len(prompts)))  # the prompt index of each row still in the batch
    for step in range(params.max_new_tokens):
        chosen = []
        for slot, row in enumerate(active):
            token = pick_token(logits[slot], params, list(prompts[row]) + outputs[row], generators[row])
            outputs[row].append(token)
            chosen.append(token)
            stopped = assemblers[row].push([token] if token not in eos else []).stopped
            if token in eos or stopped:
                finish[row] = "stop"
        first_token_at = first_token_at or time.perf_counter() - start
        if all(f is not None for f in finish) or step == params.max_new_tokens - 1:
            break
        keep = [slot for slot, row in enumerate(active) if finish[row] is None]
        if len(keep) < len(active):  # drop finished rows (cache, mask, positions): they cost nothing from here on
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions = mask[index], positions[index]
            active, chosen = [active[s] for s in keep], [chosen[s] for s in keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        positions = positions[:, -1:] + 1
        logits = model(input_ids=torch.tensor(chosen, device=device)[:, None], attention_mask=mask,
                       position_ids=positions, use_cache=True, **kw).logits[:, -1].float()
    total = time.perf_counter() - start
    results = []
    for row, prompt in enumerate(prompts):
        assemblers[row].finish()
        timings = Timings(prompt_tokens=len(prompt), new_tokens=len(outputs[row]),
                          time_to_first_token=first_token_at, total=total)
        results.append(GenerationResult(outputs[row], assemblers[row].text, finish[row] or "length", timings))
    return results
