"""tunelab models and runs as an lm-evaluation-harness model (``lm_eval --model tunelab``).

EleutherAI's lm-evaluation-harness (Gao et al., "A framework for few-shot language model
evaluation", Zenodo 10.5281/zenodo.5371628) asks a model three things: the log-likelihood of a
continuation given a context (multiple choice), the rolling log-likelihood of a whole text
(perplexity tasks), and a generation until a stop string. :class:`TunelabLM` answers them with
tunelab's loading (names, folders, ``.gguf`` files, run folders with their adapter and chat
template; the measured precision) and tunelab's batched generation
(:func:`tunelab.infer.batch.generate_batch`, which drops a row from the batch as soon as it is
done instead of padding it until the slowest row finishes).

Request semantics copy lm-eval's ``hf`` backend (``lm_eval/models/huggingface.py``): the same
tokenization of context and continuation (via lm-eval's ``TemplateLM``), the same left truncation
to ``max_length``, the same rolling windows, stop sequences plus the EOS text, the decoded text
cut at the first stop. Tests check equal results on the tiny model
(tests/evaluate/test_harness.py); bench/eval_harness.py compares log-likelihoods and speed on
the bundled model.

Installed with ``pip install 'tunelab[eval]'``; the bundled tasks (``tunelab_mc``,
``tunelab_gen``, ``tunelab_rolling``; tag ``tunelab``) live in ``tunelab/presets/evaltasks``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from tunelab.evaluate.scoring import ScoreRow, ScoringModel, load_scoring_model, score_rows

DEFAULT_BATCH = 32  # rows per forward; generation drops finished rows, so a large batch wastes nothing
AUTO_TOKENS = 16384  # batch_size=auto: at most this many padded tokens per scoring forward
TASKS_DIR = Path(__file__).resolve().parent.parent / "presets" / "evaltasks"


@register_model("tunelab")
class TunelabLM(TemplateLM):
    """lm-eval model: ``lm_eval --model tunelab --model_args pretrained=runs/NAME,dtype=fp32``.

    Args:
        pretrained: a model name, folder, ``.gguf`` file or run folder (``model=`` also works).
        batch_size: rows per forward pass, or ``auto`` (scoring batches capped at 16k tokens).
        dtype: ``auto`` (the measured fastest dtype), ``fp32``, ``bf16``, ``fp16``.
        device: ``auto``, ``cpu``, ``cuda``.
        max_length: context length (default: lm-eval's rule for the ``hf`` backend).
        max_gen_toks: default generation length when a task does not set one.
        add_bos_token: force (or forbid) the BOS token, as the ``hf`` backend's option.
        scorer: an already loaded model (tests, benchmarks); overrides ``pretrained``.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: str | None = None,
        batch_size: int | str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool | None = None,
        scorer: ScoringModel | None = None,
        **_ignored: Any,  # lm-eval passes max_batch_size and others every backend may not use
    ):
        super().__init__()
        spec = pretrained or model
        if scorer is None:
            if spec is None:
                raise ValueError("TunelabLM needs pretrained=MODEL (a name, folder, .gguf file or run folder)")
            scorer = load_scoring_model(str(spec), dtype=dtype, device=device or "auto")
        self.scorer = scorer
        self.tokenizer = scorer.tokenizer
        self.auto_batch = batch_size in (None, "auto") or str(batch_size).startswith("auto")
        self.batch_size = DEFAULT_BATCH if self.auto_batch else int(batch_size)
        self._max_length = max_length
        self._max_gen_toks = max_gen_toks
        self.add_bos_token = add_bos_token
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id

    # --- what lm-eval asks of a TemplateLM ----------------------------------------------------

    @property
    def model(self):
        return self.scorer.model

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        from lm_eval.models.utils import DEFAULT_MAX_LENGTH, resolve_max_length

        return self._max_length or resolve_max_length(self.model.config, self.tokenizer, default=DEFAULT_MAX_LENGTH)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.scorer.name.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None, **kw) -> list:
        """As the ``hf`` backend: the tokenizer's own special tokens unless told, none if BOS is already there."""
        kwargs: dict[str, bool] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            kwargs["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            kwargs["add_special_tokens"] = False
        ids = self.tokenizer.encode(string, **kwargs)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # --- log-likelihoods ----------------------------------------------------------------------

    def _score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """``(sum log p(cont | ctx), cont is the greedy continuation)`` for (context, continuation) ids."""
        rows = []
        for ctx, cont in pairs:
            ids = (list(ctx) + list(cont))[-(self.max_length + 1) :]  # left-truncate as the hf backend
            rows.append(ScoreRow(tuple(ids), tuple(range(len(ids) - len(cont), len(ids)))))
        scores = score_rows(
            self.model,
            rows,
            batch_size=self.batch_size,
            pad_id=self.pad_id,
            max_tokens=AUTO_TOKENS if self.auto_batch else None,
        )
        return [(s.logprob, s.greedy) for s in scores]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        answers = self._score([(ctx, cont) for _, ctx, cont in requests])
        for (request, _, _), answer in zip(requests, answers, strict=True):
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, answer)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum of log p over a whole text, in disjoint windows of ``max_length`` (as the hf backend)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        pairs, owner = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for window in map(make_disjoint_window, windows):
                pairs.append(window)
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, self._score(pairs), strict=True):
            totals[index] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # --- generation -------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy or sampled generation until a stop string, batched per set of generation settings."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            params = _sampling_params(kwargs, until)
            limit = self.max_length - params.max_new_tokens
            if limit <= 0:
                raise ValueError(f"max_gen_toks {params.max_new_tokens} leaves no room in max_length {self.max_length}")
            prompts = {i: self.tok_encode(requests[i].args[0], left_truncate_len=limit) for i in indices}
            for i, tokens in self._generate(prompts, params).items():
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                out[i] = postprocess_generated_text(text, until, None)
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out

    def _generate(self, prompts: dict[int, list[int]], params) -> dict[int, list[int]]:
        """Token ids generated for each prompt; prompts of similar length share a batch."""
        from tunelab.errors import ServeError
        from tunelab.infer import Generator, generate_batch

        order = sorted(prompts, key=lambda i: -len(prompts[i]))
        tokens: dict[int, list[int]] = {}
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            try:
                results = generate_batch(self.model, self.tokenizer, [prompts[i] for i in rows], params)
            except ServeError:  # prompt/prefix-tuning adapters: one prompt at a time
                generator = Generator(self.model, self.tokenizer)
                results = [generator.generate(prompts[i], params) for i in rows]
            tokens.update({i: r.tokens for i, r in zip(rows, results, strict=True)})
        return tokens


def _sampling_params(kwargs: dict, until: list[str]):
    """lm-eval generation kwargs → :class:`tunelab.infer.types.SamplingParams` (greedy unless do_sample)."""
    from tunelab.infer.types import SamplingParams

    sample = bool(kwargs.get("do_sample", False))
    return SamplingParams(
        max_new_tokens=int(kwargs["max_gen_toks"]),
        temperature=float(kwargs.get("temperature") or 0.0) if sample else 0.0,
        top_p=float(kwargs.get("top_p") or 1.0),
        top_k=int(kwargs.get("top_k") or 0),
        repetition_penalty=float(kwargs.get("repetition_penalty") or 1.0),
        stop=tuple(s for s in until if s),
    )


def task_manager(tasks: Sequence[str], include_paths: Sequence[str | Path] = ()):
    """An lm-eval TaskManager that knows the bundled tasks, ``include_paths`` and (when needed) lm-eval's own.

    lm-eval's own index has thousands of task files; it is only built when a name is not one of
    the bundled or included tasks.

    Raises:
        ConfigError: a task name that no index knows (with the closest names).
    """
    import difflib

    from lm_eval.tasks import TaskManager

    from tunelab.errors import ConfigError

    for path in include_paths:
        if not Path(path).is_dir():
            raise ConfigError(f"--include-path {path}: not a folder\n  fix: point at a folder of lm-eval task YAMLs")
    paths = [str(TASKS_DIR), *(str(p) for p in include_paths)]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not all(t in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=paths, include_defaults=True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        close = sorted({c for t in unknown for c in difflib.get_close_matches(t, manager.all_tasks, n=3)})
        raise ConfigError(
            f"--tasks: unknown task(s) {', '.join(unknown)}"
            + (f" (close: {', '.join(close)})" if close else "")
            + "\n  fix: use a bundled task (tunelab_mc, tunelab_gen, tunelab_rolling, or the tag tunelab), "
            "an lm-eval task name, or add your task folder with --include-path DIR"
        )
    return manager


def run_harness(
    lm,
    tasks: Sequence[str],
    *,
    include_paths: Sequence[str | Path] = (),
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    log_samples: bool = False,
    seed: int = 1234,
) -> dict:
    """Run lm-eval's ``simple_evaluate`` on ``lm`` (a TunelabLM or any lm-eval LM); returns its results dict."""
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=task_manager(tasks, include_paths),
        limit=limit,
        num_fewshot=num_fewshot,
        apply_chat_template=apply_chat_template,
        log_samples=log_samples,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
