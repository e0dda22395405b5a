"""--verify: agreement on a faithful export, and a clear failure on template or EOS mismatch."""

from __future__ import annotations

import json
import shutil

import pytest

from tunelab.export.verify import ExportMismatchError, agreement, read_prompts, verify


def test_agreement_arithmetic(tiny_tokenizer):
    same = agreement("p", [5, 6, 7], [5, 6, 7], tiny_tokenizer)
    assert (same.matching, same.agreement, same.first_mismatch) == (3, 1.0, None)
    diverged = agreement("p", [5, 6, 7, 8], [5, 9, 7], tiny_tokenizer)
    assert (diverged.matching, diverged.agreement, diverged.first_mismatch) == (2, 0.5, 1)
    shorter = agreement("p", [5, 6], [5, 6, 2], tiny_tokenizer)
    assert (shorter.agreement, shorter.first_mismatch) == (2 / 3, 2)


def test_cli_verify_hf_and_gguf(lora_run, hf_export, gguf_exports, tmp_path):
    from tunelab.cli.main import main

    root = tmp_path / "exports"
    shutil.copytree(hf_export, root / "hf")
    shutil.copytree(gguf_exports["f16"].parent, root / "gguf-f16")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hello there"}\n{"prompt": "What is 2+2?"}\n')
    assert main(["export", str(lora_run), "--verify", "--out", str(root), "--prompts", str(prompts),
                 "--max-new-tokens", "12"]) == 0
    report = json.loads((root / "hf" / "verify.json").read_text())
    by_kind = {t["kind"]: t for t in report["targets"]}
    from tunelab.export.targets import llama_cpp_available

    assert set(by_kind) == {"hf", "gguf"} | ({"llama.cpp"} if llama_cpp_available() else set())
    assert by_kind["hf"]["agreement"] == 1.0 and by_kind["hf"]["max_logit_diff"] < 1e-4
    assert by_kind["gguf"]["max_logit_diff"] < 5e-3  # fp16 weight rounding only (see test_gguf)
    if "llama.cpp" in by_kind:  # + llama.cpp's f16 arithmetic (see test_gguf)
        assert by_kind["llama.cpp"]["agreement"] == 1.0 and by_kind["llama.cpp"]["max_logit_diff"] < 2e-2
    assert [p["prompt"] for p in by_kind["hf"]["prompts"]] == ["Hello there", "What is 2+2?"]
    assert all(p["reference_tokens"] == 12 or p["reference_text"].endswith("<|im_end|>")
               for p in by_kind["hf"]["prompts"])
    assert json.loads((root / "gguf-f16" / "verify.json").read_text()) == report


def test_chat_template_mismatch_is_detected(lora_run, hf_export, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(hf_export, folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").write_text(template.replace("You are a helpful assistant.", "You are a pirate."))
    with pytest.raises(ExportMismatchError, match="chat template differs on sample 0") as err:
        verify(lora_run, [folder], max_new_tokens=4)
    assert "verify.json" in str(err.value)
    assert json.loads((folder / "verify.json").read_text())["targets"][0]["problems"]


def test_eos_mismatch_is_detected(lora_run, hf_export, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(hf_export, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = 0  # <|endoftext|>: the export would run past <|im_end|>
    (folder / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportMismatchError, match=r"EOS mismatch: the run stops on \[2\] \['<\|im_end\|>'\]"):
        verify(lora_run, [folder], max_new_tokens=4)


def test_modelfile_template_mismatch_is_detected(lora_run, gguf_exports, tmp_path):
    folder = tmp_path / "gguf"
    shutil.copytree(gguf_exports["f16"].parent, folder)
    modelfile = folder / "Modelfile"
    modelfile.write_text(modelfile.read_text().replace("<|im_start|>user\n{{ $m.Content }}", "USER: {{ $m.Content }}"))
    with pytest.raises(ExportMismatchError, match="Modelfile TEMPLATE differs"):
        verify(lora_run, [folder], max_new_tokens=4)


def test_prompts_file_errors_name_the_line(tmp_path):
    from tunelab.errors import DataError

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: expected a JSON object with a \"prompt\" field"):
        read_prompts(bad)
    assert read_prompts(None)[0] == "What is the capital of France?"
