"""Models that ``--verify`` compares: the trained run and each export, behind one small interface.

Each target loads its own tokenizer (so a lost chat template or EOS shows up), generates greedily
and, where the backend exposes them, returns logits for teacher-forced scoring.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import CheckpointError, ModelError


@dataclass
class Target:
    """A model to compare. ``kind``: run | hf | bnb | gguf | llama.cpp."""

    name: str
    kind: str
    path: Path
    tokenizer: object = None
    model: object = None  # a transformers/peft model, or a llama_cpp.Llama
    eos_token_ids: list[int] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)  # Modelfile stop strings (gguf)
    go_template: str | None = None  # Modelfile TEMPLATE (gguf)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, eos_ids: list[int]) -> list[int]:
        """Greedy continuation of ``prompt_ids``, cut after the first EOS in ``eos_ids``."""
        if self.kind == "llama.cpp":
            return _llama_cpp_generate(self.model, prompt_ids, max_new_tokens, eos_ids)
        import torch

        ids = torch.tensor([prompt_ids], device=self.model.device)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                eos_token_id=eos_ids, pad_token_id=self.tokenizer.pad_token_id,
            )
        return _cut_at_eos(out[0, len(prompt_ids) :].tolist(), eos_ids)

    def logits(self, ids: list[int]):
        """``(T, V)`` fp32 logits for ``ids`` (teacher forcing)."""
        import torch

        if self.kind == "llama.cpp":
            self.model.reset()
            self.model.eval(ids)
            return torch.from_numpy(self.model.scores[: len(ids)].copy()).float()

        with torch.no_grad():
            x = torch.tensor([ids], device=self.model.device)
            return self.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float().cpu()


def _cut_at_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[: i + 1]
    return tokens


def _llama_cpp_generate(llm, prompt_ids: list[int], max_new_tokens: int, eos_ids: list[int]) -> list[int]:
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
        out.append(int(token))
        if token in eos_ids or len(out) >= max_new_tokens:
            break
    return out


def load_reference(run_dir: Path) -> Target:
    """The trained run as it was trained: base + unmerged adapter (or the full model)."""
    from tunelab.models.load import load_run
    from tunelab.models.merge import eos_token_ids

    loaded = load_run(run_dir, device="cpu", dtype="fp32", as_trained=True)
    eos = eos_token_ids(loaded.tokenizer, getattr(loaded.model, "generation_config", None))
    return Target(run_dir.name, "run", run_dir, loaded.tokenizer, loaded.model, eos)


def _load_folder(target: Target) -> Target:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tunelab.models.merge import id_list

    kwargs = {"device_map": {"": "cpu"}} if target.kind == "bnb" else {"dtype": torch.float32}
    kwargs |= {"use_safetensors": True, "trust_remote_code": False}  # exports are safetensors; never run their code
    target.model = AutoModelForCausalLM.from_pretrained(str(target.path), **kwargs).eval()
    target.tokenizer = AutoTokenizer.from_pretrained(str(target.path), trust_remote_code=False)
    try:
        target.eos_token_ids = id_list(GenerationConfig.from_pretrained(str(target.path)).eos_token_id)
    except OSError:
        target.eos_token_ids = []
    return target


def gguf_eos_ids(path: Path) -> list[int]:
    """``tokenizer.ggml.eos_token_id`` and ``eot_token_id`` from the GGUF metadata (what llama.cpp stops on)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    ids = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        if key in reader.fields:
            ids.append(int(reader.fields[key].contents()))
    return list(dict.fromkeys(ids))


def _attach_modelfile(target: Target) -> None:
    from tunelab.export.modelfile import read_modelfile_template

    modelfile = target.path.parent / "Modelfile"
    if modelfile.is_file():
        target.go_template, target.stops = read_modelfile_template(modelfile)


def _load_gguf(target: Target) -> Target:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(target.path.parent), target.path.name
    target.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    target.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    target.eos_token_ids = gguf_eos_ids(target.path)
    _attach_modelfile(target)
    return target


def _load_llama_cpp(target: Target) -> Target:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    try:  # logits_all: teacher-forced logits of every position, for the logit-difference check
        target.model = Llama(model_path=str(target.path), n_ctx=2048, verbose=False, seed=0, logits_all=True)
    except ValueError as err:
        raise ModelError(
            f"llama.cpp (llama-cpp-python) could not load {target.path}: {err}.\n"
            "  fix: rerun with `python -c \"import llama_cpp; llama_cpp.Llama('FILE', verbose=True)\"` to see "
            "llama.cpp's reason, and report it; transformers' GGUF reader was checked separately"
        ) from None
    target.tokenizer = AutoTokenizer.from_pretrained(str(target.path.parent), gguf_file=target.path.name)
    target.eos_token_ids = gguf_eos_ids(target.path)
    _attach_modelfile(target)
    return target


LOADERS: dict[str, Callable[[Target], Target]] = {
    "hf": _load_folder,
    "bnb": _load_folder,
    "gguf": _load_gguf,
    "llama.cpp": _load_llama_cpp,
}


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _discover(path: Path) -> list[Target]:
    if path.is_file() and path.suffix == ".gguf":
        return [Target(path.name, "gguf", path)]
    if (path / "config.json").is_file():
        quantized = "quantization_config" in json.loads((path / "config.json").read_text())
        return [Target(path.name, "bnb" if quantized else "hf", path)]
    if path.is_dir():
        children = [c for c in sorted(path.iterdir()) if c.is_dir() or c.suffix == ".gguf"]
        return [t for child in children for t in _discover(child)]
    return []


def discover(path: Path) -> list[Target]:
    """Exports under ``path`` (an export folder, a .gguf file, or ``RUN/export``), unloaded."""
    found = _discover(path)
    if llama_cpp_available():
        found += [Target(t.name, "llama.cpp", t.path) for t in found if t.kind == "gguf"]
    return found


def load_targets(targets: list[Target]) -> list[Target]:
    if not targets:
        raise CheckpointError("nothing to verify: no export found.\n  fix: run `tunelab export RUN --format hf` first")
    return [LOADERS[t.kind](t) for t in targets]
