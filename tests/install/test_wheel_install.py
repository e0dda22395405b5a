"""The built wheel, installed into a fresh venv and run from another folder, has everything it needs.

Issue 9, criterion 14: from a plain ``pip install .`` (not editable) ``tunelab quickstart`` failed
with "cannot find examples/quickstart.yaml … run from the tunelab checkout". The venv reuses this
environment's installed dependencies (torch and the rest) through a ``.pth`` line, so nothing is
downloaded; tunelab itself comes only from the wheel: the checkout is neither the working folder
nor on ``PYTHONPATH``, and the test checks where ``tunelab`` was imported from.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(bin folder of the fresh venv, a working folder outside the checkout, environment)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"  # build from a copy: an in-tree build writes build/ and *.egg-info into the checkout
    shutil.copytree(ROOT / "tunelab", src / "tunelab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    quiet = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    quiet.pop("PYTHONPATH", None)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         str(src), "-w", str(work / "dist"), cwd=work, env=quiet)
    (wheel,) = (work / "dist").glob("tunelab-*.whl")

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=work, env=quiet)
    purelib = Path(_run(str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=work, env=quiet).strip())
    # The dependencies (torch, transformers, pip itself) from this environment; its editable-install
    # hook is a .pth file in a site folder of its own, which a path added this way does not run.
    (purelib / "_tunelab_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel),
         cwd=work, env=quiet)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin", elsewhere, quiet


def test_wheel_carries_the_examples_and_runs_from_another_folder(wheel_env):
    bin_dir, cwd, env = wheel_env
    where = _run(str(bin_dir / "python"), "-c", "import tunelab; print(tunelab.__file__)", cwd=cwd, env=env)
    assert where.strip().startswith(str(bin_dir.parent)), where  # the wheel's copy, not the checkout's

    assert "before and after" in _run(str(bin_dir / "tunelab"), "quickstart", "--help", cwd=cwd, env=env)
    check = ("from pathlib import Path; from tunelab.quickstart import quickstart_config;"
             "p = Path(quickstart_config().data.path); assert p.is_file(), p; print(p)")
    assert _run(str(bin_dir / "python"), "-c", check, cwd=cwd, env=env).strip().startswith(str(bin_dir.parent))

    listed = _run(str(bin_dir / "tunelab"), "examples", "list", cwd=cwd, env=env)
    assert {"quickstart", "sft-lora", "dpo"} <= {line.split()[0] for line in listed.splitlines() if line.strip()}
    _run(str(bin_dir / "tunelab"), "examples", "copy", "sft-lora", "cfg", cwd=cwd, env=env)
    assert (cwd / "cfg" / "sft-lora.yaml").is_file() and (cwd / "cfg" / "data" / "quickstart.jsonl").is_file()


@pytest.mark.slow  # ~45 s on 2 busy cores: torch, transformers and peft imported in a fresh process
def test_copied_example_trains_one_step_from_the_wheel(wheel_env):
    bin_dir, cwd, env = wheel_env
    _run(str(bin_dir / "tunelab"), "examples", "copy", "sft-lora", "dry", cwd=cwd, env=env)
    _run(str(bin_dir / "tunelab"), "train", "dry/sft-lora.yaml", "model.name=tiny", "training.max_steps=1",
         "training.eval_every=0", "training.save_every=0", "training.precision=fp32", "data.max_length=64",
         "name=dry", "output_dir=runs", cwd=cwd, env=env)
    run = cwd / "runs" / "dry"
    assert (run / "result.json").is_file() and (run / "adapter" / "adapter_config.json").is_file()
    assert "quickstart.jsonl" in (run / "config.yaml").read_text()
