"""The precomputed reference cache (``<run>/reference_logps.safetensors``) is reused only for the
same tokens, template, model, adapter start and precision; any change recomputes it."""

from __future__ import annotations

import pytest

from tests.align.conftest import preference_rows, tiny_config, write_jsonl
from tunelab.methods.reference import CACHE_FILE


def _prepare(cfg, model, tok, run_dir):
    """A fresh DPO method over ``cfg``'s data; returns (items, reference forward calls)."""
    from tunelab.methods import get_method

    dpo = get_method("dpo")(cfg, model, tok, run_dir)
    data = dpo.build_datasets()
    calls = {"n": 0}
    real = dpo.reference.logps

    def counting(m, batch):
        calls["n"] += 1
        return real(m, batch)

    dpo.reference.logps = counting
    dpo.before_training(model, data)
    return dpo, data, calls["n"]


def test_cache_is_reused_for_same_data_and_recomputed_when_it_changes(tmp_path):
    from tunelab.models.load import load_model

    train_file = tmp_path / "train.jsonl"
    write_jsonl(train_file, preference_rows(12, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", preference_rows(4, seed=2))
    cfg = tiny_config(tmp_path, "dpo", (str(train_file), val), method_args={"precompute_reference": True},
                      training={"micro_batch_size": 4})
    model, tok = load_model(cfg.model, cfg.adapter, for_training=True, device="cpu")
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    _, first, n_first = _prepare(cfg, model, tok, run_dir)
    assert n_first == 4 and (run_dir / CACHE_FILE).is_file()  # 3 train + 1 validation batches of 4
    _, again, n_again = _prepare(cfg, model, tok, run_dir)
    assert n_again == 0  # same data: read from the cache
    assert [it.ref_chosen for it in again.train] == [it.ref_chosen for it in first.train]

    write_jsonl(train_file, preference_rows(12, seed=3))  # same size, other pairs
    dpo, changed, n_changed = _prepare(cfg, model, tok, run_dir)
    assert n_changed == 3  # the train split again; validation did not change
    batch = dpo.collate(list(changed.train[:4]))
    fresh = dpo.reference.logps(model, {k: v for k, v in batch.items() if k != "ref_logps"})
    expected = [it.ref_chosen for it in changed.train[:4]] + [it.ref_rejected for it in changed.train[:4]]
    assert fresh.tolist() == pytest.approx(expected, abs=1e-5)
    assert [it.ref_chosen for it in changed.train] != [it.ref_chosen for it in first.train]


@pytest.mark.parametrize(
    ("section", "change"),
    [("data", {"template": "qa"}), ("adapter", {"r": 4}), ("model", {"dtype": "bf16"}),
     ("training", {"precision": "bf16"})],
)
def test_cache_key_covers_template_model_adapter_and_precision(tmp_path, section, change):
    from tunelab.methods.reference import cache_fingerprint

    data = (str(tmp_path / "t.jsonl"), None)
    base = tiny_config(tmp_path, "dpo", data)
    changed = base.model_copy(update={section: getattr(base, section).model_copy(update=change)})
    assert cache_fingerprint(base, "cpu") == cache_fingerprint(tiny_config(tmp_path, "dpo", data), "cpu")
    assert cache_fingerprint(changed, "cpu") != cache_fingerprint(base, "cpu")
