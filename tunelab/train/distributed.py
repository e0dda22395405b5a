"""Multi-process training on accelerate: who is main, what the ranks share, what they reduce.

The one loop runs unchanged in every process that ``tunelab train --nproc N``,
``accelerate launch -m tunelab train ...`` or ``torchrun -m tunelab train ...`` starts: DDP
(Li et al. 2020, "PyTorch Distributed", arXiv:2006.15704), and FSDP or DeepSpeed ZeRO when an
accelerate config turns them on. What makes the loop rank-aware:

* **one shared, seeded sample order**: rank r trains on its slice of every micro-batch draw
  (:class:`~tunelab.train.sampler.ResumableSampler` with ``rank``/``world``), so the sampler
  state is the same on every rank and a checkpoint resumes under any process count;
* **only the main process writes** (run folder, checkpoints, metrics, plots, progress); the other
  ranks give their method a private scratch folder and wait at barriers;
* **exact loss weighting**: each micro-batch loss is weighted by its share of the step's *global*
  weight (tokens or pairs summed over micro-batches and ranks), times the world size because
  DDP averages gradients over ranks (:func:`loss_scale`);
* **reduced metrics**: the logged loss, tokens and method metrics are those of the global step.

With one process every helper here is the identity, so the single-process loop is unchanged.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import ConfigError

#: set in the processes ``tunelab train --nproc`` starts
LAUNCHED = "TUNELAB_NPROC_CHILD"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_world() -> int:
    """How many processes a launcher (torchrun, accelerate launch) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def prints_preflight() -> bool:
    """Whether this process prints the data preflight: one process, or rank 0 of a launch that
    ``tunelab train --nproc`` did not start (that one printed it before launching)."""
    return os.environ.get("RANK", "0") == "0" and LAUNCHED not in os.environ


def start(device: str) -> Ranks:
    """Join the process group the launcher described in the environment (gloo on CPU, nccl on GPU).

    accelerate's ``PartialState`` initialises it once per process; the loop's ``Accelerator``
    later finds it initialised and reuses it.
    """
    if launched_world() <= 1:
        return Ranks()
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return Ranks(state.process_index, state.num_processes)


def current() -> Ranks:
    """The ranks of an initialised process group (after :func:`start`), else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def finish() -> None:
    """Leave the process group at the end of a multi-process run (no-op otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: Any, ranks: Ranks) -> Any:
    """The main process's ``value`` on every rank (e.g. the run name it stamped)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_sum(value: float, ranks: Ranks, device: torch.device) -> float:
    """``value`` summed over ranks (float64, on ``device`` so nccl can reduce it)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order."""
    if ranks.world == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def loss_scale(weight: float, global_weight: float, ranks: Ranks) -> float:
    """Factor on a micro-batch loss (a mean over its own ``weight``) before ``backward``.

    The step's gradient must be ``sum_i w_i * grad(loss_i) / W`` over all micro-batches ``i`` of
    all ranks, ``W`` their summed weight. DDP (and FSDP, ZeRO) average the ranks' gradients,
    dividing by the world size, so each rank scales by ``w_i / W * world``. One process: ``w_i / W``.
    """
    return weight / (global_weight or 1.0) * ranks.world


def reduce_outcome(loss_sum: float, tokens: int, finite: bool, metrics: dict[str, float], ranks: Ranks):
    """(global weighted loss sum, tokens, all finite, metrics) of one step over all ranks.

    ``metrics`` are already weighted by the global step weight on each rank, so the global
    value of a metric is the sum of the ranks' values (a key some rank lacks counts as 0 there).
    """
    if ranks.world == 1:
        return loss_sum, tokens, finite, metrics
    parts = gather((loss_sum, tokens, finite, metrics), ranks)
    merged: dict[str, float] = {}
    for _, _, _, m in parts:
        for k, v in m.items():
            merged[k] = merged.get(k, 0.0) + v
    return sum(p[0] for p in parts), sum(p[1] for p in parts), all(p[2] for p in parts), merged


def scratch_dir(ranks: Ranks, run_dir: Path) -> Path:
    """Where this rank's method may write files: the run folder on the main process, a private
    temporary folder elsewhere (removed by :func:`drop_scratch`), so only rank 0 writes the run."""
    if ranks.main:
        return run_dir
    return Path(tempfile.mkdtemp(prefix=f"tunelab-rank{ranks.rank}-"))


def drop_scratch(ranks: Ranks, folder: Path, run_dir: Path) -> None:
    if not ranks.main and folder != run_dir:
        shutil.rmtree(folder, ignore_errors=True)


def require_support(method_name: str, supported: bool, ranks: Ranks) -> None:
    """Refuse a method that cannot run under DDP yet (it bypasses the wrapped model's forward)."""
    if ranks.world > 1 and not supported:
        raise ConfigError(
            f"method={method_name} does not support multi-process training yet (its loss calls the model "
            "body directly or generates rollouts, which DDP cannot synchronise).\n"
            "  fix: train it in one process (drop --nproc / accelerate launch), or use sft, dpo, ipo, simpo, orpo, kto"
        )


def is_sharded(accelerator) -> bool:
    """True under FSDP or DeepSpeed, where weights live in shards and must be gathered to save."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def configure_engine(accelerator, micro_batch_size: int, gradient_accumulation: int) -> None:
    """DeepSpeed settings the loop must give before ``prepare``: it steps its optimizer inside
    ``backward``, so one micro-batch per step, and its batch size cannot come from a dataloader."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    if gradient_accumulation != 1:
        raise ConfigError(
            f"training.gradient_accumulation={gradient_accumulation} under DeepSpeed: DeepSpeed steps the optimizer "
            "inside every backward.\n  fix: training.gradient_accumulation=1 and a larger training.micro_batch_size"
        )
    accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch_size


def full_state(accelerator, model) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict gathered on the main process under FSDP / DeepSpeed ZeRO-3
    (every rank must call it: it is a collective); ``None`` when the unwrapped model already
    holds full weights (one process, DDP). Needs FSDP's FULL_STATE_DICT / ZeRO-3's
    ``stage3_gather_16bit_weights_on_model_save`` (see presets/examples/accelerate/)."""
    if not is_sharded(accelerator):
        return None
    return accelerator.get_state_dict(model)


# -- the launcher behind ``tunelab train --nproc N`` --------------------------------------------


def launch_command(nproc: int, argv: Sequence[str], *, device: str, accelerate_config: Path | None) -> list[str]:
    """``accelerate launch`` of ``nproc`` copies of ``python -m tunelab <argv>`` (GPUs, or any
    accelerate config: ``--multi_gpu``, or the config's FSDP / DeepSpeed settings)."""
    head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc)]
    head += ["--config_file", str(accelerate_config)] if accelerate_config else ["--multi_gpu"]
    if device == "cpu":
        head.append("--cpu")
    return [*head, "-m", "tunelab", *argv]


def _elastic(nproc: int, argv: Sequence[str]) -> int:
    """``nproc`` local copies of ``python -m tunelab <argv>`` under torch's elastic agent, as
    ``torchrun --standalone`` starts them (a free rendezvous port; accelerate's own launcher
    runs a single process on CPU unless MPI is installed). A failed rank's own message is on
    stderr already; the agent's traceback is not repeated."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "tunelab", *argv)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
        from tunelab.utils.log import console

        console.print(f"training process {rank} of {nproc} failed (exit code {failure.exitcode}); its message is above")
        return code
    return 0


def launch_env(nproc: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """The children's environment: one share of the CPU cores each (unless OMP_NUM_THREADS is set)."""
    out = dict(os.environ if env is None else env)
    out.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    out[LAUNCHED] = "1"
    return out


def launch(nproc: int, argv: Sequence[str], *, device: str, accelerate_config: Path | None = None) -> int:
    """Run ``tunelab <argv>`` in ``nproc`` processes; returns their exit code (the first failure's)."""
    import subprocess

    if nproc < 1:
        raise ConfigError(f"--nproc: {nproc} must be at least 1")
    if device == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s), one per process.\n"
            f"  fix: --nproc {torch.cuda.device_count()}, or training.device=cpu; several machines: accelerate launch "
            "with examples/accelerate/*.yaml (docs/training.md)"
        )
    if accelerate_config is not None and not accelerate_config.is_file():
        raise ConfigError(
            f"--accelerate-config: {accelerate_config} does not exist.\n"
            "  fix: pass one of `tunelab examples list`'s accelerate/*.yaml (copied with `tunelab examples copy`)"
        )
    if device == "cpu" and accelerate_config is None:
        saved = dict(os.environ)
        os.environ.update(launch_env(nproc))  # the elastic agent passes this process's environment on
        try:
            return _elastic(nproc, argv)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    cmd = launch_command(nproc, argv, device=device, accelerate_config=accelerate_config)
    proc = subprocess.Popen(cmd, env=launch_env(nproc))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # the launcher forwards it to its workers
        return proc.wait()
