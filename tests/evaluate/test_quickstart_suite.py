"""The quickstart scores its before / after through the quickstart suite (examples/eval/quickstart.yaml)."""

from __future__ import annotations


def test_quickstart_before_after_come_from_the_suite(tmp_path, tiny_path, monkeypatch, capsys):
    from tunelab.cli.main import main
    from tunelab.quickstart import follows_format

    monkeypatch.setenv("TUNELAB_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    overrides = [
        "model.name=tiny",
        "adapter.type=lora",
        "training.max_steps=2",
        "training.eval_every=0",
        "training.save_every=0",
        f"output_dir={tmp_path}",
        "name=qs",
    ]
    assert main(["quickstart", *overrides]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "the same through the quickstart suite" in out and "[1] tiny" in out and "[2] qs" in out
    from tunelab.quickstart import suite_scores

    run, (before, after) = suite_scores(["tiny", str(tmp_path / "qs")])  # cached now: no generation
    assert [m.generated for m in run.models] == [0, 0]
    assert before.total == after.total == 10
    for score in (before, after):  # the suite's verdict is the quickstart's own format check
        assert score.passed == sum(follows_format(a) for a in score.answers)
    assert f"format adherence: before {before.passed}/10, after {after.passed}/10" in out
