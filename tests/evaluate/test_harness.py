"""The lm-eval bridge gives the results of lm-eval's own ``hf`` backend on the same model (tiny, fp32)."""

from __future__ import annotations

import os

import pytest

lm_eval = pytest.importorskip("lm_eval")

from tunelab.evaluate.harness import TunelabLM, run_harness, task_manager  # noqa: E402  (lm-eval is optional)

TASKS = ["tunelab_mc", "tunelab_gen", "tunelab_rolling"]


@pytest.fixture(scope="module")
def both(tiny_path):
    """Results of both backends on the bundled tasks, samples logged."""
    from lm_eval.models.huggingface import HFLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ours = TunelabLM(str(tiny_path), dtype="fp32", batch_size=8, device="cpu")
    hf = HFLM(pretrained=str(tiny_path), dtype="float32", batch_size=8, device="cpu")
    return (run_harness(ours, TASKS, log_samples=True, limit=20), run_harness(hf, TASKS, log_samples=True, limit=20))


def test_the_bundled_tasks_are_found_without_lm_evals_own_index():
    manager = task_manager(["tunelab"])
    assert set(TASKS) <= set(manager.all_tasks)
    assert "hellaswag" not in manager.all_tasks  # the thousands of built-in tasks were not indexed


def _samples(results, task):
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def test_multiple_choice_loglikelihoods_equal_the_hf_backend(both):
    ours, hf = both
    for a, b in zip(_samples(ours, "tunelab_mc"), _samples(hf, "tunelab_mc"), strict=True):
        assert a["doc_id"] == b["doc_id"] and a["arguments"] == b["arguments"]
        for [(lp_a, greedy_a)], [(lp_b, greedy_b)] in zip(a["resps"], b["resps"], strict=True):  # one per choice
            assert float(lp_a) == pytest.approx(float(lp_b), abs=1e-4)
            assert greedy_a == greedy_b
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["tunelab_mc"][metric] == hf["results"]["tunelab_mc"][metric]


def test_rolling_loglikelihoods_equal_the_hf_backend(both):
    ours, hf = both
    for a, b in zip(_samples(ours, "tunelab_rolling"), _samples(hf, "tunelab_rolling"), strict=True):
        assert a["resps"][0][0] == pytest.approx(b["resps"][0][0], abs=1e-3)  # a sum over ~30 tokens
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours["results"]["tunelab_rolling"][metric] == pytest.approx(
            hf["results"]["tunelab_rolling"][metric], rel=1e-5
        )


def test_greedy_generations_equal_the_hf_backend(both):
    ours, hf = both
    texts = []
    for a, b in zip(_samples(ours, "tunelab_gen"), _samples(hf, "tunelab_gen"), strict=True):
        assert a["resps"] == b["resps"]
        texts.append(a["resps"][0][0])
    assert any(texts) and not any("\n" in t for t in texts)  # cut at the stop string, as hf does
    assert ours["results"]["tunelab_gen"]["exact_match,none"] == hf["results"]["tunelab_gen"]["exact_match,none"]


def test_rolling_windows_split_a_text_longer_than_max_length(tiny_path):
    """With max_length 8 a paragraph takes several windows; their sum equals the one-window score of hf."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    text = "The river ran slowly past the old mill, and the children watched the water turn gold."
    request = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    short = TunelabLM(str(tiny_path), dtype="fp32", max_length=8)
    hf_short = HFLM(pretrained=str(tiny_path), dtype="float32", batch_size=4, device="cpu", max_length=8)
    assert short.loglikelihood_rolling(request)[0] == pytest.approx(
        hf_short.loglikelihood_rolling(request)[0], abs=1e-3
    )


def test_cli_runs_a_bundled_task_and_refuses_an_unknown_one(tmp_path, capsys):
    import json

    from tunelab.cli.main import main

    out = tmp_path / "results.json"
    args = ["eval", "harness", "--tasks", "tunelab_mc", "--model", "tiny", "--dtype", "fp32", "--limit", "4"]
    assert main([*args, "--json", "--output", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out)["tunelab_mc"]
    assert metrics["sample_len"] == 4 and 0 <= metrics["acc,none"] <= 1
    assert json.loads(out.read_text())["results"]["tunelab_mc"]["acc,none"] == metrics["acc,none"]


@pytest.mark.slow  # an unknown name is looked up in lm-eval's own index of thousands of tasks (~40 s)
def test_cli_refuses_an_unknown_task_with_the_close_names(capsys):
    from tunelab.cli.main import main

    assert main(["eval", "harness", "--tasks", "tunelab_mcq", "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "unknown task(s) tunelab_mcq" in err and "tunelab_mc" in err and "--include-path" in err
