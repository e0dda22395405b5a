"""Serving engines: ``tunelab serve --engine NAME`` picks what decodes behind the same API.

* ``tunelab`` (default): tunelab's own decode loop on the run as trained (adapters unmerged,
  several adapters at once, speculation, context cache; any device).
* ``llama.cpp``: the run's GGUF export through llama-cpp-python (exported on the fly into
  ``RUN/export/gguf-QUANT`` when absent); the fast choice on a CPU (:mod:`tunelab.infer.llamacpp`).
* ``vllm``: the run's merged Hugging Face export through vLLM, for CUDA GPUs
  (:mod:`tunelab.infer.vllm_engine`).

Each entry is a loader ``(target, EngineOptions) -> Backend`` (:class:`tunelab.serve.backend.Backend`),
registered lazily so that listing the names imports neither llama_cpp nor vllm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.infer.types import Speculation
from tunelab.registry import Registry


@dataclass(frozen=True)
class EngineOptions:
    """What ``tunelab serve`` passes to an engine's loader (each engine reads the ones it supports).

    Args:
        adapters: extra adapters ``NAME → PATH`` (tunelab engine only).
        device: auto | cpu | cuda (tunelab engine).
        draft: draft model for ``--speculation draft`` (tunelab engine).
        speculation: default speculation of every request (tunelab engine).
        quant: GGUF quantization served by llama.cpp (f16 | q8_0 | q4_0 | f32).
        max_context: cap on the context the engine allocates up front (llama.cpp, vLLM); 0 = engine default.
        static_cache, compile: tunelab engine: a ``StaticCache`` / a ``torch.compile``'d decode step.
        lean: tunelab engine: the lean decode step (:mod:`tunelab.infer.lean`).
    """

    adapters: Mapping[str, str | Path] = field(default_factory=dict)
    device: str = "auto"
    draft: str | None = None
    speculation: Speculation = field(default_factory=Speculation)
    quant: str = "f16"
    max_context: int = 0
    static_cache: bool = False
    compile: bool = False
    lean: bool = False


Loader = Callable[[str, EngineOptions], object]


def _tunelab(target: str, options: EngineOptions):
    from tunelab.infer.load import load_engine

    return load_engine(
        target,
        options.adapters,
        device=options.device,
        draft=options.draft,
        speculation=options.speculation,
        static_cache=options.static_cache,
        compile=options.compile,
        lean=options.lean,
    )


ENGINES: Registry[Loader] = Registry("serving engine", key="--engine")
ENGINES.register("tunelab", _tunelab)
ENGINES.lazy("llama.cpp", "tunelab.infer.llamacpp:load_llama_cpp", aliases=("llama_cpp", "llamacpp"))
ENGINES.lazy("vllm", "tunelab.infer.vllm_engine:load_vllm")


def load_backend(engine: str, target: str, options: EngineOptions | None = None):
    """Load ``target`` (a run folder, model name or file) into the engine registered as ``engine``."""
    return ENGINES.get(engine)(target, options or EngineOptions())


def refuse_unsupported(
    engine: str, options: EngineOptions, *, adapters: bool = False, speculation: bool = False
) -> None:
    """A :class:`ConfigError` naming the flag when ``options`` ask for what ``engine`` cannot do."""
    asked = []
    if options.adapters and not adapters:
        asked.append(("--adapter", "serves one merged model per server"))
    if options.speculation.kind != "none" and not speculation:
        asked.append(("--speculation", "has no speculative decoding here"))
    if options.draft and not speculation:
        asked.append(("--draft", "has no speculative decoding here"))
    own_kernels = {"--compile": options.compile, "--static-cache": options.static_cache, "--lean": options.lean}
    asked += [(flag, "decodes with its own kernels") for flag, on in own_kernels.items() if on]
    if asked:
        flag, why = asked[0]
        raise ConfigError(f"{flag}: --engine {engine} {why}.\n  fix: drop {flag}, or serve with --engine tunelab")
