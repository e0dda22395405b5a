"""The registry of export formats: ``--format NAME`` → a function ``(run_dir, out, options) -> ExportResult``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.export.merge import ExportResult, export_adapter, export_hf, load_for_export
from tunelab.export.space import export_space
from tunelab.utils.fsio import atomic_folder, moved


@dataclass(frozen=True)
class ExportOptions:
    """Flags shared by the formats (each format reads the ones it needs)."""

    quant: str = "f16"  # gguf: f32 | f16 | q8_0 | q4_0
    dtype: str = "auto"  # hf: auto (as loaded, fp32) | fp32 | bf16 | fp16
    modelfile: bool = True  # gguf: also write an Ollama Modelfile


def _gguf(run_dir: Path, out: Path, options: ExportOptions) -> ExportResult:
    from tunelab.export.gguf_export import write_gguf
    from tunelab.export.modelfile import build_modelfile

    merged = load_for_export(run_dir, "gguf")
    gguf_path = out / f"{run_dir.name}-{options.quant}.gguf"
    tokenizer = merged.tokenizer
    modelfile = None
    if options.modelfile:  # translate first: a template that cannot be translated fails before writing
        probe = tokenizer("a")["input_ids"]
        adds_bos = bool(probe) and probe[0] == tokenizer.bos_token_id
        eos_text = [tokenizer.convert_ids_to_tokens(i) for i in merged.eos_token_ids]
        modelfile = build_modelfile(tokenizer, gguf_path.name, eos_text, adds_bos=adds_bos)
    write_gguf(merged, gguf_path, options.quant, name=run_dir.name)
    files = [gguf_path.name]
    if modelfile is not None:
        (out / "Modelfile").write_text(modelfile.text)
        files.append("Modelfile")
    return ExportResult("gguf", gguf_path, files, merged.eos_token_ids, [f"quant {options.quant}"])


def _bnb(kind: str) -> Callable[[Path, Path, ExportOptions], ExportResult]:
    def export(run_dir: Path, out: Path, options: ExportOptions) -> ExportResult:
        from tunelab.export.bnb import export_bnb

        return export_bnb(run_dir, out, kind)

    return export


FORMATS: dict[str, Callable[[Path, Path, ExportOptions], ExportResult]] = {
    "hf": lambda run_dir, out, options: export_hf(run_dir, out, options.dtype),
    "adapter": lambda run_dir, out, options: export_adapter(run_dir, out),
    "gguf": _gguf,
    "bnb-nf4": _bnb("nf4"),
    "bnb-int8": _bnb("int8"),
    "space": lambda run_dir, out, options: export_space(run_dir, out, options.dtype),  # a Hugging Face Space folder
}


def default_out(run_dir: Path, fmt: str, options: ExportOptions) -> Path:
    """``RUN/export/hf``, ``RUN/export/gguf-q8_0`` …"""
    return run_dir / "export" / (f"{fmt}-{options.quant}" if fmt == "gguf" else fmt)


def export(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, *, quant: str = "f16", dtype: str = "auto",
    modelfile: bool = True, overwrite: bool = False,
) -> ExportResult:
    """Export a finished run as ``fmt`` (see :data:`FORMATS`) into ``out`` (default ``RUN/export/FMT``).

    The export is written into a temporary sibling folder renamed to ``out`` once complete, so a
    failed export leaves an existing ``out`` as it was (see :func:`tunelab.utils.fsio.atomic_folder`).

    Raises:
        ConfigError: unknown format/quant/dtype; ``out`` is not empty and ``overwrite`` is false.
        ModelError: the adapter cannot be merged, or the architecture/tokenizer is not supported.
        CheckpointError: ``run_dir`` is not a finished run.
    """
    from tunelab.export.gguf_export import QUANTS
    from tunelab.utils.quiet import quiet_third_party

    quiet_third_party()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant}: unknown; choose one of {', '.join(QUANTS)}")
    if dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"--dtype {dtype}: unknown; choose one of auto, fp32, bf16, fp16")
    options = ExportOptions(quant=quant, dtype=dtype, modelfile=modelfile)
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else default_out(run_dir, fmt, options)
    with atomic_folder(target, overwrite) as tmp:
        result = FORMATS[fmt](run_dir, tmp, options)
    result.path = moved(result.path, tmp, target)
    return result
