"""``--format bnb-nf4|bnb-int8``: a bitsandbytes-quantized Hugging Face folder.

NF4 (Dettmers et al., 2023, QLoRA, arXiv:2305.14314) stores 4-bit normal-float codes with a
per-block absmax (double-quantized); LLM.int8() (Dettmers et al., 2022, arXiv:2208.07339) stores
int8 rows with a per-row scale. transformers serializes both in ``save_pretrained`` with the
``quantization_config`` in ``config.json``, so ``from_pretrained(folder)`` restores the same
codes (bit-exact; tested). With bitsandbytes 0.50 both run on CPU (int8 casts activations to
fp16 inside its matmul) as well as on CUDA.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tunelab.export.merge import ExportResult, load_for_export
from tunelab.models.merge import save_hf_folder, write_generation_config


def bnb_config(kind: str):
    import torch
    from transformers import BitsAndBytesConfig

    if kind == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def quantize_folder(source: Path, out: Path, kind: str):
    """Load the fp32 folder ``source`` quantized with bitsandbytes and save it to ``out``; returns the model."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.models.load import default_device
    from tunelab.utils.quiet import quiet_third_party

    quiet_third_party()
    device = default_device("auto")
    model = AutoModelForCausalLM.from_pretrained(
        str(source), quantization_config=bnb_config(kind), device_map={"": device}, dtype=torch.float32,
        use_safetensors=True,  # the merged folder tunelab just wrote: never fall back to a pickle
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return model


def export_bnb(run_dir: Path, out: Path, kind: str) -> ExportResult:
    """Merge the run, quantize it (``kind`` = ``nf4`` | ``int8``) and write the folder."""
    fmt = f"bnb-{kind}"
    merged = load_for_export(run_dir, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".merged-") as tmp:
        save_hf_folder(merged, Path(tmp))
        if out.exists():
            shutil.rmtree(out)
        quantize_folder(Path(tmp), out, kind)
    merged.tokenizer.save_pretrained(out)
    write_generation_config(merged.model.generation_config, merged.tokenizer, merged.eos_token_ids, out)
    notes = [f"{kind} weights via bitsandbytes; reload with AutoModelForCausalLM.from_pretrained(folder)"]
    return ExportResult(fmt, out, sorted(p.name for p in out.iterdir()), merged.eos_token_ids, notes)
