"""Progress when stderr is not a terminal: plain lines (no bar, no colour) every N steps or
seconds, and on the first and last step."""

from __future__ import annotations

import io
import re

from rich.console import Console

from tunelab.train.progress import StepProgress, clock_text, track_items

LINE = re.compile(r"^step \d+/\d+ loss \d+\.\d{4} tok/s \d+( mfu \d+\.\d%)? elapsed \d+:\d\d:\d\d ETA \d+:\d\d:\d\d$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pipe_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=40, color_system=None), out  # a file: not a terminal


def test_clock_text():
    assert [clock_text(s) for s in (0, 12.9, 60, 3725)] == ["0:00:00", "0:00:12", "0:01:00", "1:02:05"]


def test_plain_lines_every_n_steps_with_elapsed_and_eta():
    console, out = pipe_console()
    clock = FakeClock()
    with StepProgress(30, 0, console=console, clock=clock) as progress:
        for step in range(1, 31):
            clock.now += 2.4
            progress.update(step, 1.2345, 812.4)
    lines = out.getvalue().splitlines()
    # first step, every ceil(30 / 10) = 3 steps, and the last
    assert [int(line.split()[1].split("/")[0]) for line in lines] == [1, *range(3, 31, 3)]
    assert all(LINE.match(line) for line in lines), lines
    # step 5 is not printed (not a multiple of 3); step 6: 14.4 s for 6 steps, 24 left -> 57.6 s
    assert lines[2] == "step 6/30 loss 1.2345 tok/s 812 elapsed 0:00:14 ETA 0:00:57"
    assert lines[-1] == "step 30/30 loss 1.2345 tok/s 812 elapsed 0:01:12 ETA 0:00:00"
    assert "\x1b" not in out.getvalue() and "━" not in out.getvalue()  # no colour, no bar


def test_plain_lines_every_interval_when_steps_are_slow():
    console, out = pipe_console()
    clock = FakeClock()
    with StepProgress(1000, 10, console=console, clock=clock, interval_s=20.0) as progress:
        for step in range(11, 16):
            clock.now += 25.0  # each step longer than the interval
            progress.update(step, 2.0, 5.0)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["11/1000", "12/1000", "13/1000", "14/1000", "15/1000"]
    assert lines[0] == "step 11/1000 loss 2.0000 tok/s 5 elapsed 0:00:25 ETA 6:52:05"  # 25 s x 989 steps


def test_a_time_budget_caps_the_eta():
    """``training.max_minutes`` with a large ``max_steps``: the budget, not the step count, ends the run."""
    console, out = pipe_console()
    clock = FakeClock()
    with StepProgress(10000, 0, console=console, clock=clock, interval_s=20.0, deadline_s=600.0) as progress:
        for step in (1, 2):
            clock.now += 25.0
            progress.update(step, 2.0, 5.0)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("elapsed 0:00:25 ETA 0:09:35")  # 600 - 25 s, not 25 s x 9999 steps
    assert lines[1].endswith("elapsed 0:00:50 ETA 0:09:10")


def test_plain_line_shows_mfu_as_a_percentage():
    console, out = pipe_console()
    clock = FakeClock()
    with StepProgress(2, 0, console=console, clock=clock) as progress:
        clock.now += 3.0
        progress.update(1, 1.5, 100.0, 0.1234)
    assert out.getvalue().splitlines() == ["step 1/2 loss 1.5000 tok/s 100 mfu 12.3% elapsed 0:00:03 ETA 0:00:03"]


def test_terminal_keeps_the_bar():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with StepProgress(3, 0, console=console) as progress:
        for step in (1, 2, 3):
            progress.update(step, 1.0, 10.0)
    assert "step 1/3" not in out.getvalue() and "3/3" in out.getvalue()


def test_track_items_prints_plain_lines():
    console, out = pipe_console()
    clock = FakeClock()
    seen = []
    for item in track_items(list("abcd"), "answering held-out prompts (base)", console=console, clock=clock):
        clock.now += 3.0
        seen.append(item)
    assert seen == list("abcd")
    assert out.getvalue().splitlines() == [
        "answering held-out prompts (base) 1/4 elapsed 0:00:03 ETA 0:00:09",
        "answering held-out prompts (base) 2/4 elapsed 0:00:06 ETA 0:00:06",
        "answering held-out prompts (base) 3/4 elapsed 0:00:09 ETA 0:00:03",
        "answering held-out prompts (base) 4/4 elapsed 0:00:12 ETA 0:00:00",
    ]


def test_a_training_run_with_stderr_captured_prints_progress_lines(make_config, capfd):
    from tunelab.train.loop import train

    train(make_config("training.max_steps=4"))
    err = capfd.readouterr().err
    steps = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(LINE.match(line) and " mfu " in line for line in steps), steps


def test_quickstart_scoring_prints_plain_lines(tiny_path, capfd):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.quickstart import score_format

    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    score = score_format(model, tokenizer, ["What is 2+2?", "Name a color."], max_new_tokens=2, label="(tiny)")
    assert score.total == 2
    err = capfd.readouterr().err
    assert re.search(r"^answering held-out prompts \(tiny\) 1/2 elapsed \d:\d\d:\d\d ETA", err, re.M), err
    assert re.search(r"^answering held-out prompts \(tiny\) 2/2 elapsed \d:\d\d:\d\d ETA 0:00:00$", err, re.M), err
