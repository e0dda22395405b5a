"""vLLM as a serving engine, for CUDA GPUs: a run's merged Hugging Face export behind ``Backend``.

vLLM (Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with
PagedAttention", arXiv:2309.06180) pages the KV cache and batches requests continuously; it is
what people deploy on GPUs. tunelab drives its synchronous engine (``LLMEngine``: ``add_request``
then ``step()`` until the request finishes), one request at a time from the server's worker
thread, so each step's new tokens stream out as they are decided. As with llama.cpp, prompts are
rendered and tokenized by the run's tokenizer and trained chat template and passed as token ids
(vLLM's detokenizer is off), and the text, stop strings and EOS go through
:func:`tunelab.infer.decode.text_deltas`. Log-probs use vLLM's ``prompt_logprobs``.

vLLM is not a tunelab dependency (it needs CUDA and pins its own torch): ``pip install vllm`` on
the GPU machine. Without it ``--engine vllm`` fails with that fix, before anything loads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

from tunelab.errors import ConfigError, ModelError
from tunelab.infer.engine import ExternalEngine
from tunelab.infer.types import SamplingParams, Timings, TokenLogprob

INSTALL_HINT = "pip install vllm on a CUDA machine (it brings its own torch build), then rerun"


def require_vllm():
    """The ``vllm`` module, or a :class:`ModelError` that says how to get it."""
    try:
        import vllm
    except ImportError:
        raise ModelError(
            f"--engine vllm: vllm is not installed.\n  fix: {INSTALL_HINT}; on a CPU use --engine llama.cpp"
        ) from None
    return vllm


class VllmEngine(ExternalEngine):
    """One merged model served by vLLM's ``LLMEngine``, with tunelab's tokenizer and chat template.

    Args:
        engine: a ``vllm.LLMEngine``.
        tokenizer: the run's tokenizer, carrying the chat template it was trained with.
        model_id: the id clients ask for (the run's name).
        eos: every token id that ends a turn.
        max_context: the engine's ``max_model_len``.
        vocab_size: rows of the model's embedding.
    """

    def __init__(self, engine, tokenizer, model_id: str, eos: Sequence[int], max_context: int, vocab_size: int):
        super().__init__()
        self.engine = engine
        self.tokenizer = tokenizer
        self.served = {model_id: None}
        self.eos = frozenset(int(t) for t in eos)
        self.max_context = max_context
        self.vocab_size = vocab_size
        self._ids = itertools.count()

    def _params(self, **kwargs):
        from vllm import SamplingParams as VllmParams

        return VllmParams(detokenize=False, stop_token_ids=sorted(self.eos), **kwargs)

    def _steps(self, prompt: list[int], params: SamplingParams, timings: Timings) -> Iterator[list[int]]:
        """The tokens each ``engine.step()`` adds to this request (aborted if the consumer stops early)."""
        request_id = f"tunelab-{next(self._ids)}"
        sampling = self._params(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or -1,
            repetition_penalty=params.repetition_penalty,
            seed=params.seed,
        )
        self.engine.add_request(request_id, {"prompt_token_ids": prompt}, sampling)
        seen, finished = 0, False
        try:
            while not finished and self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.request_id != request_id:
                        continue
                    timings.forward_passes += 1
                    tokens = list(out.outputs[0].token_ids)
                    finished = out.finished
                    if len(tokens) > seen:
                        new, seen = tokens[seen:], len(tokens)
                        yield new
        finally:
            if not finished:
                self.engine.abort_request([request_id])

    def logprobs(self, model_id: str, ids: Sequence[int], top: int = 0) -> list[TokenLogprob]:
        """Per-token log-probabilities of ``ids`` (vLLM's ``prompt_logprobs``, one forward pass)."""
        from tunelab.infer.logprobs import token_pieces

        self._check(model_id)
        ids = [int(t) for t in ids]
        request_id = f"tunelab-logprobs-{next(self._ids)}"
        with self._lock:
            self.engine.add_request(
                request_id,
                {"prompt_token_ids": ids},
                self._params(max_tokens=1, temperature=0.0, prompt_logprobs=max(top, 1)),
            )
            final = None
            while final is None:
                final = next((o for o in self.engine.step() if o.request_id == request_id and o.finished), None)
        pieces = token_pieces(self.tokenizer, ids)
        rows = []
        for i, (token, piece) in enumerate(zip(ids, pieces, strict=True)):
            entry = final.prompt_logprobs[i] if i > 0 else None
            if entry is None:
                rows.append(TokenLogprob(token, piece, None))
                continue
            ranked = sorted(entry.items(), key=lambda kv: -kv[1].logprob)[:top]
            names = token_pieces(self.tokenizer, [t for t, _ in ranked])
            top_pairs = tuple(zip(names, [lp.logprob for _, lp in ranked], strict=True))
            rows.append(TokenLogprob(token, piece, float(entry[token].logprob), top_pairs if top else ()))
        return rows


def run_hf_export(run_dir: Path) -> Path:
    """``RUN/export/hf`` (the merged, vLLM-ready folder), exported now when absent."""
    from tunelab.export.formats import ExportOptions, default_out, export
    from tunelab.utils.log import console

    folder = default_out(run_dir, "hf", ExportOptions())
    if not (folder / "config.json").is_file():
        console.print(f"exporting {run_dir} to {folder} for vLLM (once)…")
        export(run_dir, "hf", out=folder, overwrite=True)
    return folder


def load_vllm(target: str, options) -> VllmEngine:
    """``--engine vllm``: a run folder (its merged HF export) or a model folder, served by vLLM."""
    from tunelab.infer.engines import refuse_unsupported
    from tunelab.infer.load import is_run_folder, run_tokenizer
    from tunelab.models.load import load_tokenizer
    from tunelab.models.merge import eos_token_ids

    refuse_unsupported("vllm", options)
    vllm = require_vllm()
    source = Path(target)
    if is_run_folder(source):
        run_dir = source.resolve()
        folder, tokenizer, model_id = run_hf_export(run_dir), run_tokenizer(run_dir), run_dir.name
    elif (source / "config.json").is_file():
        folder, tokenizer, model_id = source, load_tokenizer(source), source.name
    else:
        raise ConfigError(
            f"--engine vllm serves a run folder (runs/NAME, merged on the fly) or a model folder with "
            f"config.json; {target} is neither.\n  fix: `tunelab serve runs/NAME --engine vllm`"
        )
    args = {"model": str(folder), "tokenizer": str(folder), "skip_tokenizer_init": True, "trust_remote_code": False}
    if options.max_context:
        args["max_model_len"] = options.max_context
    engine = vllm.LLMEngine.from_engine_args(vllm.EngineArgs(**args))
    config = getattr(engine, "model_config", None) or engine.get_model_config()  # v1 engine / older API
    return VllmEngine(
        engine,
        tokenizer,
        model_id,
        eos_token_ids(tokenizer, _generation_config(folder)),
        int(config.max_model_len),
        int(config.get_vocab_size()),
    )


def _generation_config(folder: Path):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(folder))
    except OSError:  # no generation_config.json: the tokenizer's EOS and the template's terminator only
        return None
