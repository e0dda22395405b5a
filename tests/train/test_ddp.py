"""Multi-process training (DDP on CPU, gloo): 2 processes equal 1 process with the same global batch.

The 2-process runs go through the real CLI (``tunelab train --nproc 2``: torch.distributed.run
starting ``python -m tunelab train`` twice, OMP_NUM_THREADS=1 each); the 1-process peers run in
this process. Global batch: 2 ranks x micro-batch 2 x accumulation 2 = 1 x 4 x 2 = 8 rows.
AdamW hardly sees a gradient's scale, so the logged gradient norm (the synchronised true
gradient, before the update) is what checks the loss scaling; the weights check the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import tiny_overrides
from tunelab.config import save_config
from tunelab.errors import ConfigError
from tunelab.train import distributed
from tunelab.train.distributed import Ranks
from tunelab.train.loop import train
from tunelab.train.sampler import ResumableSampler

STEPS = ["training.max_steps=4", "training.save_every=2", "training.keep_last=10", "training.gradient_accumulation=2"]
STEPS += ["training.lr_scheduler=linear"]
TOL = 1e-4


def _launch(config_file: Path, tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``tunelab train CONFIG --nproc 2 ...``; scratch folders of rank 1 would land in ``tmp``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp), "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "tunelab", "train", str(config_file), "--nproc", "2", *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _steps(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in _records(run) if "loss" in r}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _files(run: Path) -> list[str]:
    """The run folder's files but the trackers' (their names hold times and process ids)."""
    return sorted(
        str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.parts[len(run.parts)] != "trackers"
    )


def _cut_at_step_2(src: Path, dst: Path) -> None:
    """A copy of a finished run as it was when its step-2 checkpoint was the newest."""
    shutil.copytree(src, dst)
    for name in ("adapter", "checkpoints/step-4"):
        shutil.rmtree(dst / name)
    (dst / "result.json").unlink()


@pytest.fixture(scope="module")
def runs(sft_file, tmp_path_factory):
    """The 1-process reference (in process) and a 2-process run of the same global batch (CLI)."""
    from tunelab.config import load_config

    root = tmp_path_factory.mktemp("ddp")
    base = [
        *tiny_overrides(sft_file, root / "runs"),
        "training.device=cpu",  # gloo, also on a GPU machine (bench/gpu_check.sh runs nccl)
        "training.trackers=[tensorboard]",  # closed after the last barrier (it leaves the process group)
        *STEPS,
    ]
    one = train(load_config(None, [*base, "name=one", "training.micro_batch_size=4"]))
    config_file = root / "config.yaml"
    save_config(load_config(None, [*base, "training.micro_batch_size=2"]), config_file)
    scratch = root / "tmp"
    scratch.mkdir()
    # no name: the ranks must agree on the main process's timestamped one
    two_out = root / "two-runs"
    done = _launch(config_file, scratch, f"output_dir={two_out}")
    (two,) = list(two_out.iterdir())
    return {"base": base, "root": root, "one": Path(one.run_dir), "two": two, "out": done, "scratch": scratch}


def test_two_processes_give_the_losses_and_weights_of_one(runs):
    one, two = _steps(runs["one"]), _steps(runs["two"])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        for key in ("loss", "grad_norm", "lr"):  # (trained_tokens is per micro-batch: half as many here)
            assert two[step][key] == pytest.approx(one[step][key], abs=TOL, rel=TOL), (step, key)
    vals = [[r["val_loss"] for r in _records(runs[k]) if "val_loss" in r] for k in ("one", "two")]
    assert vals[1][-1] == pytest.approx(vals[0][-1], abs=TOL)
    assert _max_diff(_weights(runs["one"]), _weights(runs["two"])) < TOL
    # the LoRA B matrices started at 0: the check compares trained weights, not initial ones
    assert max(float(v.abs().max()) for k, v in _weights(runs["two"]).items() if "lora_B" in k) > 1e-3
    result = json.loads((runs["two"] / "result.json").read_text())
    assert result["steps"] == 4 and result["final_loss"] == pytest.approx(one[4]["loss"], abs=TOL)


def test_only_the_main_process_wrote(runs):
    one, two = runs["one"], runs["two"]
    assert _files(two) == _files(one)  # same folder; no file twice, none from rank 1
    assert len(_records(two)) == len(_records(one))  # one line per step, not one per rank
    events = [len(list((run / "trackers").rglob("events.out.tfevents.*"))) for run in (one, two)]
    assert events[1] == events[0] > 0  # rank 0's tensorboard files only
    assert not list(runs["scratch"].glob("tunelab-rank*"))  # rank 1's method scratch folder was removed
    err = runs["out"].stderr
    assert err.count("step 4/4") == 1 and err.count("precision:") == 1, err[-2000:]


def test_checkpoint_of_two_processes_resumes_in_one(runs):
    from tunelab.config import load_config

    cut = runs["root"] / "runs" / "two-to-one"
    _cut_at_step_2(runs["two"], cut)
    resumed = train(load_config(None, [*runs["base"], "name=two-to-one", "training.micro_batch_size=4"]), resume=True)
    assert _max_diff(_weights(Path(resumed.run_dir)), _weights(runs["one"])) < TOL
    assert _steps(cut)[4]["loss"] == pytest.approx(_steps(runs["one"])[4]["loss"], abs=TOL)


def test_checkpoint_of_one_process_resumes_in_two(runs):
    cut = runs["root"] / "runs" / "one-to-two"
    _cut_at_step_2(runs["one"], cut)
    _launch(runs["root"] / "config.yaml", runs["scratch"], f"output_dir={cut.parent}", "name=one-to-two", "--resume")
    assert _max_diff(_weights(cut), _weights(runs["one"])) < TOL
    assert [r["step"] for r in _records(cut) if "loss" in r] == [1, 2, 3, 4]


# -- the pieces, without processes ----------------------------------------------------------------


def test_ranks_share_one_order_and_one_state():
    """Rank r's draws are the r-th slices of one process's draws of world x n; states agree."""
    single = ResumableSampler(10, seed=7)
    ranks = [ResumableSampler(10, seed=7, rank=r, world=2) for r in range(2)]
    for _ in range(7):  # crosses epochs (10 items, 4 per draw)
        whole = single.take(4)
        assert ranks[0].take(2) + ranks[1].take(2) == whole
        assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()


def test_loss_scale_is_the_global_share_times_the_world():
    # rank 0 holds weights 3 and 5, rank 1 holds 2: W = 10; DDP divides the summed gradients by 2
    assert distributed.loss_scale(3, 10, Ranks(0, 2)) == pytest.approx(0.6)
    scaled = [distributed.loss_scale(w, 10, Ranks(0, 2)) for w in (3, 5, 2)]
    assert sum(scaled) / 2 == pytest.approx(1.0)  # after DDP's mean: the weights' shares sum to 1
    assert distributed.loss_scale(3, 10, Ranks()) == pytest.approx(0.3)


def test_methods_that_bypass_the_ddp_forward_are_refused():
    from tunelab.methods import get_method

    assert not get_method("reward").multi_process and not get_method("ppo").multi_process
    assert get_method("sft").multi_process and get_method("dpo").multi_process
    with pytest.raises(ConfigError, match="fix:"):
        distributed.require_support("reward", False, Ranks(1, 2))
    distributed.require_support("reward", False, Ranks())  # one process: fine


def test_launch_commands(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="1 GPU"):  # one GPU per process, checked before any launch
        distributed.launch(2, ["train", "c.yaml"], device="cuda")
    gpu = distributed.launch_command(4, ["train", "c.yaml"], device="cuda", accelerate_config=Path("fsdp.yaml"))
    assert gpu[1:3] == ["-m", "accelerate.commands.launch"]
    assert gpu[3:7] == ["--num_processes", "4", "--config_file", "fsdp.yaml"]
    assert "--multi_gpu" in distributed.launch_command(2, ["train"], device="cuda", accelerate_config=None)
    assert distributed.launch_env(2, {})["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert distributed.launch_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    assert gpu[-4:] == ["-m", "tunelab", "train", "c.yaml"]


def test_refusals_come_before_the_launch(runs, capsys):
    """What every process would refuse is refused once by the launching command (exit 2, no launch)."""
    from tunelab.cli.main import main

    config = str(runs["root"] / "config.yaml")
    assert main(["train", config, "--nproc", "2", "method=reward"]) == 2
    assert "does not support multi-process" in capsys.readouterr().err
    taken = f"output_dir={runs['one'].parent}"
    assert main(["train", config, "--nproc", "2", taken, "name=one"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_failed_rank_gives_its_own_message_and_exit_code(runs):
    """No launcher traceback: each rank's one-paragraph error, then one line naming the failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "tunelab", "train", str(runs["root"] / "config.yaml"), "--nproc", "2"]
    cmd += [f"data.path={runs['root'] / 'missing.jsonl'}", f"output_dir={runs['root'] / 'failed'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert "data file not found" in done.stderr and "failed (exit code 2)" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_reference_pass_runs_on_the_module_inside_ddp(tmp_path, tiny_path):
    """DPO/KTO's adapter-off reference needs peft's ``disable_adapter``, which DDP's wrapper lacks:
    it runs on the wrapped module (no gradient, nothing to synchronise) and gives the same values."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tunelab.config import AdapterArgs, ModelArgs
    from tunelab.methods.logprobs import completion_logps
    from tunelab.methods.reference import Reference
    from tunelab.models.load import load_model

    model, _ = load_model(ModelArgs(name=str(tiny_path)), AdapterArgs(type="lora", r=4, dropout=0.0), for_training=True)
    with torch.no_grad():  # a non-zero adapter, so that adapter-off differs from adapter-on
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": torch.zeros_like(ids)}
    batch["completion_mask"][:, 5:] = 1
    reference = Reference(None, model)
    expected = reference.logps(model, batch)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model)
        assert torch.allclose(reference.logps(wrapped, batch), expected)
        policy, _ = completion_logps(wrapped, batch)  # the policy pass goes through DDP's forward
        assert not torch.allclose(policy, expected)  # the adapter was on there, off in the reference
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two more process launches (about a minute on 2 busy cores)
def test_dpo_with_an_on_the_fly_reference_in_two_processes_equals_one(tmp_path):
    """Pairs are the weight (batch_weight = pairs); the adapter-off reference runs every step."""
    from tunelab.config import load_config

    data = Path(__file__).resolve().parents[2] / "tunelab" / "presets" / "examples" / "data" / "preferences.jsonl"
    base = [
        "method=dpo",
        "model.name=tiny",
        "adapter.r=8",
        "adapter.dropout=0.0",
        f"data.path={data}",
        "data.format=preference",
        "data.max_length=160",
        "data.max_prompt_length=96",
        "method_args.precompute_reference=false",
        "training.precision=fp32",
        "training.device=cpu",
        "training.max_steps=3",
        "training.gradient_accumulation=2",
        "training.learning_rate=0.01",
        f"output_dir={tmp_path / 'runs'}",
    ]
    one = Path(train(load_config(None, [*base, "name=one", "training.micro_batch_size=4"])).run_dir)
    config_file = tmp_path / "dpo.yaml"
    save_config(load_config(None, [*base, "training.micro_batch_size=2"]), config_file)
    _launch(config_file, tmp_path, "name=two")
    two = tmp_path / "runs" / "two"
    for step, row in _steps(one).items():
        for key in ("loss", "grad_norm", "accuracy"):
            assert _steps(two)[step][key] == pytest.approx(row[key], abs=TOL, rel=TOL), (step, key)
    assert _max_diff(_weights(one), _weights(two)) < TOL
