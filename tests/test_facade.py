"""`import tunelab` is a lazy public facade: no torch until a torch name is used, every name resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_import_tunelab_does_not_import_torch_and_config_works():
    """Before: tunelab/__init__.py was empty, so `tunelab.load_config` did not exist."""
    _run(
        "import sys\nimport tunelab\n"
        "torch = lambda: sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert torch() == [], torch()\n"
        "cfg = tunelab.load_config(None, ['method=dpo', 'method_args.beta=0.3'])\n"
        "assert cfg.method == 'dpo' and cfg.method_args == {'beta': 0.3}\n"
        "assert tunelab.plan_training and tunelab.TrainSpec and tunelab.METHODS.names()\n"
        "assert torch() == [], torch()\n"
        "import importlib.metadata as md\nassert tunelab.__version__ == md.version('tunelab')\n"
    )


def test_every_public_name_resolves_to_its_definition():
    import tunelab
    from tunelab.config import load_config
    from tunelab.export import export
    from tunelab.models.load import load_run
    from tunelab.train.loop import train

    for name in tunelab.__all__:
        assert getattr(tunelab, name) is not None, name
    assert tunelab.load_config is load_config and tunelab.load_run is load_run
    assert tunelab.train_run is train and tunelab.export_run is export
    assert set(tunelab.__all__) <= set(dir(tunelab))


def test_subpackages_stay_packages_and_unknown_names_are_attribute_errors():
    import types

    import tunelab

    assert isinstance(tunelab.train, types.ModuleType) and tunelab.train.__name__ == "tunelab.train"
    assert isinstance(tunelab.export, types.ModuleType) and isinstance(tunelab.memory, types.ModuleType)
    with pytest.raises(AttributeError, match="no attribute 'trian_run'"):
        tunelab.trian_run  # noqa: B018 - the attribute access is the test
    assert not hasattr(tunelab, "nope")
