"""llama.cpp as a serving engine: a run's GGUF export behind the server's ``Backend`` protocol.

Why: on a CPU, llama.cpp's C++ decode loop (its own threading, f16 and q8_0 kernels) runs
several times faster than any PyTorch loop on the same weights (``bench/generate.py``). tunelab
keeps everything around the model the same: prompts are rendered and tokenized by the run's own
tokenizer and trained chat template (``RUN/chat_template.jinja``) and handed to llama.cpp as
token ids, so both engines see identical prompts; EOS, stop strings, multi-byte characters,
cancellation and timings go through :func:`tunelab.infer.decode.text_deltas`; the routes, auth,
limits, metrics and guardrails of :mod:`tunelab.serve` do not know which engine answers.

Sampling runs in a llama.cpp sampler chain built in tunelab's (= transformers') order:
repetition penalty over the whole context, prompt included (CTRL, Keskar et al. 2019; llama.cpp's
own default looks at the last 64 tokens only), temperature, top-k, top-p (Holtzman et al. 2020),
then a seeded draw; greedy is the argmax. A seeded request is reproducible, but it draws from
llama.cpp's RNG, so its sample differs from the same seed on tunelab's engine. Log-probs are
teacher-forced: the sequence is decoded again in ``n_batch`` chunks with logits at every
position, and :func:`tunelab.infer.logprobs.logprobs_from_logits` turns them into the same
numbers and token strings as tunelab's engine.

This module drives llama-cpp-python one level below ``Llama.generate`` (``Llama.eval``, the
context's logits and a ``LlamaSampler`` chain) because ``generate`` fixes llama.cpp's sampler
order and min-p; it is tested against llama-cpp-python 0.3.36 (the ``[llama]`` extra).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.infer.cache import common_prefix_len
from tunelab.infer.engine import ExternalEngine
from tunelab.infer.logprobs import logprobs_from_logits
from tunelab.infer.types import SamplingParams, Timings, TokenLogprob

#: Context allocated when the GGUF's training context is longer (the KV cache is allocated up front).
MAX_CONTEXT = 8192
INSTALL_HINT = 'pip install "llama-cpp-python>=0.3.36" (or pip install -e ".[llama]"; builds from source, ~6 min)'


def open_llama(path: Path, *, n_ctx: int, n_threads: int | None = None, flash_attn: bool = True, use_mmap: bool = True):
    """``llama_cpp.Llama`` on ``path`` (no logits kept per position: decoding only needs the last).

    Flash attention is on, as in llama.cpp's own tools (their default, ``auto``, turns it on for a
    CPU; llama-cpp-python turns it off unless asked): attention becomes one fused op per layer
    instead of several (scores, mask + softmax, weighted sum, permutes), fewer thread barriers per
    step; ``bench/generate.py`` measures it against a "flash attention off" row. It accumulates in
    llama.cpp's f16 like the rest of the f16 model, so it breaks f16 near-ties its own way: on 30
    chat prompts its greedy tokens equal tunelab's fp32 ones as often as without it (27/30,
    ``bench/llamacpp_agreement.py``).

    ``use_mmap=False`` reads the file into memory instead of mapping it: ``bench/prune.py`` loads
    each variant afresh that way every round, because a mapped file's page placement alone moved
    decode time by ~6% between two byte-identical copies of the same GGUF.
    """
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ModelError(
            f"--engine llama.cpp needs llama-cpp-python, which is not installed.\n  fix: {INSTALL_HINT}"
        ) from None
    import torch

    threads = n_threads or torch.get_num_threads()
    try:  # the prompt's threads too (llama-cpp-python's default is every core, which spins against a busy machine)
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=flash_attn,
            use_mmap=use_mmap,
            verbose=False,
        )
    except ValueError as err:
        raise ModelError(
            f"llama.cpp could not load {path}: {err}.\n  fix: check the file with "
            f"`tunelab export RUN --format gguf --verify`"
        ) from None


class LlamaCppEngine(ExternalEngine):
    """One GGUF model served by llama.cpp, with tunelab's tokenizer and chat template.

    Args:
        llm: a ``llama_cpp.Llama`` (see :func:`open_llama`).
        tokenizer: the run's tokenizer, carrying the chat template it was trained with.
        model_id: the id clients ask for (the run's name).
        eos: every token id that ends a turn.
    """

    def __init__(self, llm, tokenizer, model_id: str, eos: Sequence[int]):
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.served = {model_id: None}
        self.eos = frozenset(int(t) for t in eos)
        self.max_context = int(llm.n_ctx())
        self.vocab_size = int(llm.n_vocab())

    def _steps(self, prompt: list[int], params: SamplingParams, timings: Timings) -> Iterator[list[int]]:
        """One sampled token per llama.cpp decode; the KV cache of a shared prompt prefix is reused."""
        llm = self.llm
        # llama.cpp keeps the KV of the last sequence: reuse its common prefix (a system prompt,
        # earlier turns), keeping at least the last prompt token to compute the first logits from.
        keep = min(common_prefix_len(llm.input_ids[: llm.n_tokens].tolist(), prompt), len(prompt) - 1)
        timings.cached_prompt_tokens = keep
        llm.n_tokens = keep  # eval() drops the KV cache from n_tokens on
        sampler = self._sampler(params, prompt)
        pending = prompt[keep:]
        for _ in range(params.max_new_tokens):
            llm.eval(pending)
            timings.forward_passes += 1
            token = int(sampler.sample(llm._ctx, -1))  # samples from the last position and accepts it
            yield [token]
            if token in self.eos:
                return
            pending = [token]

    def _sampler(self, params: SamplingParams, prompt: Sequence[int]):
        """A llama.cpp sampler chain in tunelab's order (see the module docstring)."""
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()
        if params.repetition_penalty != 1.0:
            sampler.add_penalties(
                n_vocab=self.vocab_size,
                penalty_last_n=self.max_context,
                penalty_repeat=params.repetition_penalty,
                penalty_freq=0.0,
                penalty_present=0.0,
            )
            for token in prompt:  # the penalty covers the prompt too, as in transformers
                sampler.accept(token)
        if params.greedy:
            sampler.add_greedy()
            return sampler
        sampler.add_temp(params.temperature)
        if params.top_k > 0:
            sampler.add_top_k(params.top_k)
        if params.top_p < 1.0:
            sampler.add_top_p(params.top_p, 1)
        sampler.add_dist(params.seed if params.seed is not None else random.getrandbits(31))
        return sampler

    def logprobs(self, model_id: str, ids: Sequence[int], top: int = 0) -> list[TokenLogprob]:
        """Per-token log-probabilities of ``ids`` (teacher-forced, llama.cpp's float32 logits)."""
        import numpy as np
        import torch

        self._check(model_id)
        ids = [int(t) for t in ids]
        llm = self.llm
        rows = []
        with self._lock:
            llm.n_tokens = 0
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            for begin in range(0, len(ids), llm.n_batch):
                chunk = ids[begin : begin + llm.n_batch]
                llm._batch.set_batch(batch=chunk, n_past=begin, logits_all=True)
                llm._ctx.decode(llm._batch)
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), self.vocab_size))
                rows.append(torch.from_numpy(logits.copy()))
                llm.input_ids[begin : begin + len(chunk)] = chunk
                llm.n_tokens = begin + len(chunk)
        return logprobs_from_logits(torch.cat(rows), ids, self.tokenizer, top)


def gguf_context_length(path: Path) -> int:
    """``{arch}.context_length`` from the GGUF metadata (the context the model was trained for)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    arch = fields["general.architecture"].contents()
    field = fields.get(f"{arch}.context_length")
    return int(field.contents()) if field is not None else MAX_CONTEXT


def run_gguf(run_dir: Path, quant: str) -> Path:
    """``RUN/export/gguf-QUANT/RUN-QUANT.gguf``, exported now (with a note on stderr) when absent."""
    from tunelab.export.formats import ExportOptions, default_out, export
    from tunelab.utils.log import console

    folder = default_out(run_dir, "gguf", ExportOptions(quant=quant))
    path = folder / f"{run_dir.name}-{quant}.gguf"
    if not path.is_file():
        console.print(f"exporting {run_dir} to {path} for llama.cpp (once)…")
        path = export(run_dir, "gguf", out=folder, quant=quant, overwrite=True).path
    return path


def load_llama_cpp(target: str, options) -> LlamaCppEngine:
    """``--engine llama.cpp``: a run folder (its GGUF export) or a ``.gguf`` file, served by llama.cpp."""
    from tunelab.errors import ConfigError
    from tunelab.export.targets import gguf_eos_ids
    from tunelab.infer.engines import refuse_unsupported
    from tunelab.infer.load import is_run_folder, run_tokenizer
    from tunelab.models.merge import eos_token_ids

    refuse_unsupported("llama.cpp", options)
    source = Path(target)
    if is_run_folder(source):
        run_dir = source.resolve()
        path, tokenizer, model_id = run_gguf(run_dir, options.quant), run_tokenizer(run_dir), run_dir.name
    elif source.suffix == ".gguf" and source.is_file():
        from transformers import AutoTokenizer

        path, model_id = source, source.stem
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    else:
        raise ConfigError(
            f"--engine llama.cpp serves a run folder (runs/NAME, exported to GGUF on the fly) or a .gguf file; "
            f"{target} is neither.\n  fix: `tunelab serve runs/NAME --engine llama.cpp`, or serve a model name "
            "with the default --engine tunelab"
        )
    eos = [*gguf_eos_ids(path), *eos_token_ids(tokenizer)]
    n_ctx = min(gguf_context_length(path), options.max_context or MAX_CONTEXT)
    return LlamaCppEngine(open_llama(path, n_ctx=n_ctx), tokenizer, model_id, eos)
