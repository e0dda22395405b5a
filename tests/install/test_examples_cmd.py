"""`tunelab examples list / copy`: the bundled configs reachable from any install (issue 9, criterion 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.cli.main import main
from tunelab.compress.config import load_prune_config
from tunelab.config import load_config
from tunelab.presets.bundled_examples import examples_root, list_examples


def test_list_shows_every_bundled_config_with_its_summary(capsys):
    assert main(["examples", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = sorted(p.stem for p in examples_root().glob("*.yaml"))
    assert [line.split()[0] for line in lines] == names
    assert {"quickstart", "sft-lora", "dpo", "ppo"} <= set(names)
    sft_lora = next(line for line in lines if line.startswith("sft-lora "))
    assert "LoRA (Hu et al. 2021)" in sft_lora


def test_checkout_examples_folder_is_the_bundled_one():
    """The paths in README and docs (examples/...) are the package's files, not a second copy."""
    checkout = Path(__file__).resolve().parents[2] / "examples"
    assert checkout.resolve() == examples_root().resolve()


def test_copy_writes_config_and_data_with_paths_that_work_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["examples", "copy", "sft-lora", "mine"]) == 0
    out = (tmp_path / "mine").resolve()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "data/quickstart.jsonl", "sft-lora.yaml"]
    bundled = examples_root()
    assert (out / "data" / "quickstart.jsonl").read_bytes() == (bundled / "data" / "quickstart.jsonl").read_bytes()
    assert "next: tunelab train mine/sft-lora.yaml" in capsys.readouterr().err

    monkeypatch.chdir(Path(__file__).parent)  # another working directory: the data path still resolves
    copied = load_config(out / "sft-lora.yaml")
    assert copied.data.path == str(out / "data" / "quickstart.jsonl")
    original = load_config(bundled / "sft-lora.yaml")
    assert copied.model_dump(exclude={"data": {"path"}}) == original.model_dump(exclude={"data": {"path"}})


@pytest.mark.parametrize("example", list_examples(), ids=lambda e: e.name)
def test_every_example_copies_to_a_loadable_config_with_existing_data(example, tmp_path):
    assert main(["examples", "copy", example.name, str(tmp_path)]) == 0
    text = (tmp_path / f"{example.name}.yaml").read_text()
    assert "examples/data/" not in text  # every data reference was rewritten
    load = load_prune_config if example.command == "prune" else load_config
    config = load(tmp_path / f"{example.name}.yaml")
    assert Path(config.data.path).is_file() and Path(config.data.path).is_relative_to(tmp_path)


def test_copy_keeps_identical_files_and_refuses_changed_ones_without_overwrite(tmp_path, capsys):
    assert main(["examples", "copy", "sft-lora", str(tmp_path)]) == 0
    assert main(["examples", "copy", "sft-qlora", str(tmp_path)]) == 0  # shares data/quickstart.jsonl
    assert "kept (identical)" in capsys.readouterr().err
    config = tmp_path / "sft-lora.yaml"
    config.write_text(config.read_text() + "# my edit\n")
    edited = config.read_bytes()
    assert main(["examples", "copy", "sft-lora", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert config.read_bytes() == edited
    assert main(["examples", "copy", "sft-lora", str(tmp_path), "--overwrite"]) == 0
    assert b"# my edit" not in config.read_bytes()
    assert not [p for p in tmp_path.rglob(".*tmp-*")]  # no temporary file left behind


def test_unknown_example_names_the_closest(tmp_path, capsys):
    assert main(["examples", "copy", "sft-lroa", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "did you mean sft-lora?" in err and "tunelab examples list" in err
    assert not (tmp_path / "x").exists()


def test_quickstart_finds_its_config_and_data_in_the_package(tmp_path, monkeypatch):
    from tunelab.quickstart import eval_prompts, examples_dir, quickstart_config

    monkeypatch.chdir(tmp_path)  # not the checkout: nothing may be looked up relative to the working folder
    config = quickstart_config(["name=q"])
    assert Path(config.data.path).is_file()
    assert len(eval_prompts(examples_dir())) == 10
