"""What a red-team run talks to: a local model (tunelab's engine) or an OpenAI-compatible URL.

Why one small protocol: the runner only needs "answer these conversations", so the same probes
judge a base model, a fine-tune run folder, ``tunelab serve`` or any other server speaking
``POST /v1/chat/completions``. Local models answer in batches with greedy decoding (one
forward pass per step for the whole batch, left-padded; tunelab.infer.batch), so a run is
deterministic and a base model and its fine-tune see exactly the same attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tunelab.errors import ServeError

Conversation = Sequence[tuple[str, str]]  # (role, content)


@dataclass(frozen=True)
class Reply:
    """A target's answer; ``refused_by`` names a server-side refusal (an HTTP 400 content policy)."""

    text: str
    refused_by: str | None = None


class Target(Protocol):
    name: str
    special_tokens: tuple[str, ...]

    def answer(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[Reply]: ...


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


class EngineTarget:
    """A tunelab model name, model folder or run folder, answered by the local engine.

    Args:
        target: what ``tunelab chat`` accepts (``smollm2-135m-instruct``, ``runs/NAME``, a folder).
        batch_size: conversations per forward pass; prompts are sorted by length so a batch
            pads little.
    """

    def __init__(self, target: str, *, device: str = "auto", batch_size: int = 8, engine=None):
        from tunelab.infer import load_engine

        self.engine = engine if engine is not None else load_engine(target, device=device, cache_entries=0)
        self.model_id = self.engine.model_ids()[0]
        self.name = target
        self.batch_size = batch_size
        self.special_tokens = tuple(getattr(self.engine.tokenizer, "all_special_tokens", ()) or ())

    def answer(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[Reply]:
        from tunelab.infer import ChatMessage, SamplingParams, generate_batch

        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        prompts = [self.engine.encode_chat([ChatMessage(r, c) for r, c in conv]) for conv in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        texts: dict[int, str] = {}
        with self.engine.use(self.model_id):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                try:
                    results = generate_batch(self.engine.model, self.engine.tokenizer, [prompts[i] for i in rows],
                                             params)
                    texts.update({i: r.text for i, r in zip(rows, results, strict=True)})
                except ServeError:  # prompt/prefix-tuning adapters: one at a time, unmerged
                    for i in rows:
                        texts[i] = self.engine.generator.generate(prompts[i], params).text
        return [Reply(texts[i]) for i in range(len(prompts))]


class UrlTarget:
    """An OpenAI-compatible server: ``POST {base}/v1/chat/completions`` with greedy decoding.

    A ``400`` whose error code says the content was refused, or an answer stopped with
    ``finish_reason="content_filter"`` (the server's own guardrails), is a refusal by the server,
    not a failure of the run; any other error stops the run with the server's message.
    """

    REFUSAL_CODES = ("content_policy_violation", "content_filter", "guardrail_blocked")

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 300.0):
        from tunelab.utils.openai_client import OpenAIClient

        self.client = OpenAIClient(url, api_key=api_key, timeout=timeout)
        self.base = self.client.base
        self.model = model or self.client.first_model("pass --model-id NAME (and --api-key if the server needs one)")
        self.name = f"{self.base} ({self.model})"
        self.special_tokens: tuple[str, ...] = ()

    def answer(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[Reply]:
        replies = []
        for conv in conversations:
            body = {"model": self.model, "messages": [{"role": r, "content": c} for r, c in conv],
                    "max_tokens": max_new_tokens, "temperature": 0}
            response = self.client.request("POST", "/v1/chat/completions", json=body)
            if response.status_code == 200:
                choice = response.json()["choices"][0]
                text = choice["message"].get("content") or ""
                stopped = choice.get("finish_reason") == "content_filter"  # the server withheld the answer
                replies.append(Reply(text, refused_by="server: answer withheld (content_filter)" if stopped else None))
                continue
            error = _error_body(response)
            if response.status_code == 400 and error.get("code") in self.REFUSAL_CODES:
                replies.append(Reply("", refused_by=f"server: {error.get('message', '')[:120]}"))
                continue
            raise ServeError(f"{self.base}/v1/chat/completions answered {response.status_code}: "
                             f"{error.get('message') or response.text[:200]}\n"
                             "  fix: check --model-id, --api-key and the server's limits (--max-tokens-limit)")
        return replies


def _error_body(response) -> dict:
    try:
        return response.json().get("error") or {}
    except ValueError:
        return {}


def make_target(spec: str, *, device: str = "auto", batch_size: int = 8, model: str | None = None,
                api_key: str | None = None) -> Target:
    """A URL becomes a :class:`UrlTarget`, anything else an :class:`EngineTarget`."""
    if is_url(spec):
        return UrlTarget(spec, model=model, api_key=api_key)
    return EngineTarget(spec, device=device, batch_size=batch_size)
