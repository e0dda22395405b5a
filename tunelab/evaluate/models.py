"""What an evaluation talks to: a local model (tunelab's engine) or an OpenAI-compatible URL.

Every evaluation method (suites, arena, perplexity, the harness bridge, the demo) opens its
models through :func:`open_model`, so a spec means the same everywhere:

* a registry name (``tiny``, ``smollm2-135m-instruct``), a Hugging Face folder, a ``.gguf``
  file, or a run folder (``runs/NAME``: the base with the run's adapter and chat template);
* ``http(s)://host:port[/v1][#model-id]``: any server speaking ``POST /v1/chat/completions``
  (``tunelab serve``, vLLM, llama.cpp's server, Ollama); without ``#model-id`` the first id
  of ``GET /v1/models``.

Why ``key``: evaluation results are cached by (model, case, generation settings), so a model
needs a cache key that changes when its weights change but not when the same files are opened
again. A local key hashes the resolved path with the size and modification time of each weight,
config and tokenizer file (no weight bytes are read, so a fully cached re-run never loads or
reads the model); a URL's key is the server and model id (a server cannot tell us more).

Local models load lazily: ``name`` and ``key`` are known at once, the weights load on the first
``generate`` (or ``model`` / ``tokenizer`` access). Generation is batched with greedy or seeded
sampling (:func:`tunelab.infer.batch.generate_batch`); weights load in the dtype
:func:`tunelab.models.precision.choose_precision` measured to be fast on this machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tunelab.errors import ModelError, ServeError

if TYPE_CHECKING:  # tunelab.infer imports torch; a fully cached evaluation never needs it
    from tunelab.infer.types import SamplingParams

Conversation = list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]

#: files whose size / mtime make up a local model's key (weights, configs, tokenizer, template)
KEY_SUFFIXES = (".safetensors", ".json", ".gguf", ".yaml", ".jinja", ".model", ".bin", ".txt")


@runtime_checkable
class EvalModel(Protocol):
    """A model an evaluation can ask for answers."""

    name: str  #: short display name
    key: str  #: stable cache key; changes when the weights change

    @property
    def tokenizer(self): ...  # None for a URL

    @property
    def model(self): ...  # the torch model; None for a URL

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams, *, seeds: Sequence[int] | None = None
    ) -> list[str]: ...

    def close(self) -> None: ...


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def open_model(spec: str, *, batch_size: int = 8, device: str = "auto", api_key: str | None = None) -> EvalModel:
    """Open ``spec`` (see the module docstring) for evaluation.

    Args:
        spec: a model name, folder, run folder, ``.gguf`` file or ``http(s)://`` URL.
        batch_size: conversations per forward pass (local) or requests in flight (URL).
        device: ``auto``, ``cpu``, ``cuda``... (local models).
        api_key: bearer token for a URL that needs one.

    Raises:
        ModelError: the spec names nothing that exists.
    """
    if batch_size < 1:
        raise ModelError(f"--batch-size {batch_size}: must be at least 1\n  fix: pass --batch-size 8")
    if is_url(spec):
        return UrlModel(spec, batch_size=batch_size, api_key=api_key)
    return LocalModel(spec, batch_size=batch_size, device=device)


# --- local models --------------------------------------------------------------------------


def _file_stats(folder: Path, root: Path) -> list[str]:
    stats = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else [folder]:
        if path.is_file() and path.suffix in KEY_SUFFIXES:
            st = path.stat()
            stats.append(f"{path.relative_to(root) if path != root else path.name}:{st.st_size}:{st.st_mtime_ns}")
    return stats


def local_key(spec: str) -> tuple[str, str]:
    """``(display name, cache key)`` of a local spec, from file metadata only.

    A run folder is keyed by its config and its ``adapter/`` or ``model/`` files (the base it
    names is keyed by name: a base's weights do not change under a run); anything else by the
    folder :func:`tunelab.models.resolve.resolve_model` gives (a GGUF file by the file itself,
    so its one-off conversion is not needed to know the key).
    """
    path = Path(spec).expanduser()
    if (path / "config.yaml").is_file():  # a run folder (tunelab.infer.load.is_run_folder, torch-free here)
        root = path.resolve()
        stats = _file_stats(root, root) + _file_stats(root / "adapter", root) + _file_stats(root / "model", root)
        kind, name = "run", root.name
    elif path.suffix == ".gguf" and path.is_file():
        root = path.resolve()
        stats, kind, name = _file_stats(root, root), "gguf", path.name
    else:
        from tunelab.models.resolve import resolve_model

        resolved = resolve_model(spec)
        root = resolved.path.resolve()
        stats, kind = _file_stats(root, root), resolved.kind
        name = resolved.name if resolved.kind in ("tiny", "bundled", "hf-cache") else root.name  # aliases: one key
    if not stats:
        raise ModelError(f"{spec}: no weight or config files in {root}\n  fix: point at a model or run folder")
    digest = hashlib.sha256("\n".join([kind, str(root), *stats]).encode()).hexdigest()[:16]
    return name, f"{kind}:{name}:{digest}"


class LocalModel:
    """A model tunelab loads itself: a name, folder, ``.gguf`` file or run folder."""

    def __init__(self, spec: str, *, batch_size: int = 8, device: str = "auto"):
        self.spec = spec
        self.batch_size = batch_size
        self.device = device
        self.name, self.key = local_key(spec)
        self._engine = None
        self.generate_calls = 0  #: batches generated (tests count these to prove cache hits)

    @property
    def engine(self):
        if self._engine is None:
            from tunelab.infer import load_engine

            self._engine = load_engine(self.spec, device=self.device, cache_entries=0)
        return self._engine

    @property
    def model(self):
        return self.engine.model

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def encode(self, conversation: Conversation) -> list[int]:
        from tunelab.infer import ChatMessage

        return self.engine.encode_chat([ChatMessage(m["role"], m["content"]) for m in conversation])

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams, *, seeds: Sequence[int] | None = None
    ) -> list[str]:
        """Answer every conversation, ``batch_size`` at a time, shortest prompts batched together.

        Greedy decoding ignores seeds; with sampling, conversation ``i`` samples with ``seeds[i]``
        (default ``params.seed + i``) whatever batch it lands in.
        """
        from tunelab.infer import generate_batch

        if not conversations:
            return []
        if seeds is None and params.seed is not None:
            seeds = [params.seed + i for i in range(len(conversations))]
        engine = self.engine
        prompts = [self.encode(c) for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        texts: dict[int, str] = {}
        with engine.use(engine.model_ids()[0]):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                row_seeds = None if seeds is None else [seeds[i] for i in rows]
                self.generate_calls += 1
                try:
                    results = generate_batch(
                        engine.model, engine.tokenizer, [prompts[i] for i in rows], params, seeds=row_seeds
                    )
                    texts.update({i: r.text for i, r in zip(rows, results, strict=True)})
                except ServeError:  # prompt/prefix-tuning adapters: one at a time, unmerged
                    for k, i in enumerate(rows):
                        one = params if row_seeds is None else _with_seed(params, row_seeds[k])
                        texts[i] = engine.generator.generate(prompts[i], one).text
        return [texts[i] for i in range(len(prompts))]

    def close(self) -> None:
        self._engine = None


def _with_seed(params: SamplingParams, seed: int | None) -> SamplingParams:
    from dataclasses import replace

    return replace(params, seed=seed)


# --- OpenAI-compatible servers ---------------------------------------------------------------


class UrlModel:
    """An OpenAI-compatible server; ``batch_size`` requests in flight at once."""

    tokenizer = None
    model = None

    def __init__(self, spec: str, *, batch_size: int = 8, api_key: str | None = None, timeout: float = 300.0):
        from tunelab.utils.openai_client import OpenAIClient

        url, _, model_id = spec.partition("#")
        self.client = OpenAIClient(url, api_key=api_key, timeout=timeout)
        self.base = self.client.base
        self.batch_size = batch_size
        self.model_id = model_id or self.client.first_model("name the model in the URL: http://host:port/v1#MODEL-ID")
        self.name = self.model_id
        self.key = f"url:{self.base}#{self.model_id}"
        self.generate_calls = 0

    def _one(self, conversation: Conversation, params: SamplingParams, seed: int | None) -> str:
        body = {
            "model": self.model_id,
            "messages": conversation,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        response = self.client.request("POST", "/v1/chat/completions", json=body)
        if response.status_code != 200:
            raise ServeError(
                f"{self.base}/v1/chat/completions answered {response.status_code}: "
                f"{response.text[:200]}\n  fix: check the model id after '#' and the server's limits"
            )
        return response.json()["choices"][0]["message"].get("content") or ""

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams, *, seeds: Sequence[int] | None = None
    ) -> list[str]:
        if seeds is None:
            seeds = [None if params.seed is None else params.seed + i for i in range(len(conversations))]
        self.generate_calls += 1
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            return list(pool.map(lambda cs: self._one(cs[0], params, cs[1]), zip(conversations, seeds, strict=True)))

    def close(self) -> None:
        self.client.close()
