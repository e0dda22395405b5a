"""The compute dtype of training and inference, chosen by measuring matmuls on this machine.

Why measured and not looked up: whether bf16 beats fp32 depends on the kernels the device
really runs, not on its name. On an AVX2 CPU without AVX-512 BF16, torch runs bf16 matmuls
at about 0.9 GFLOP/s against 130 GFLOP/s in fp32 (a 45-minute quickstart instead of 3
minutes); on AVX-512/AMX CPUs and on GPUs bf16 is faster; ``ONEDNN_MAX_CPU_ISA`` can flip it
on the same CPU. So ``precision: auto`` times one matmul per dtype at a transformer MLP's
shape, once per machine (cached under ``$TUNELAB_HOME/precision/``), and uses bf16 (or fp16)
only where it is measurably faster than fp32.

``TUNELAB_PRECISION_PROBE`` injects measurements instead of timing (a JSON file, or inline
JSON such as ``{"fp32": 130, "bf16": 0.9}``): tests use it so that no result depends on
how busy the machine is.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.paths import tunelab_home

PROBE_ENV = "TUNELAB_PRECISION_PROBE"
#: A low-precision dtype is used only when it is at least this much faster than fp32.
MARGIN = 1.1
#: Environment variables that change which CPU kernels oneDNN picks (part of the cache key).
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE")
TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: accelerate's ``mixed_precision`` for each autocast dtype.
ACCELERATE_MODES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
#: Preferred low-precision dtypes, best first (bf16 needs no loss scaling).
LOW_PRECISION = ("bf16", "fp16")
#: The probe's layer: rows (micro-batch x sequence) x hidden -> up to 4 x hidden, an MLP up-projection.
ROWS, HIDDEN = 512, 1024
#: Seconds the probe may take (a slow dtype is measured on a narrower layer to stay inside it).
BUDGET_S = 1.5


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype a run computes in and the measurements it was chosen from."""

    dtype: str  #: fp32, bf16 or fp16: autocast dtype in training, weight dtype of ``auto`` inference loads
    requested: str  #: what the config asked for: auto, fp32, bf16 or fp16
    device: str
    gflops: dict[str, float]  #: measured matmul GFLOP/s per dtype
    source: str  #: explicit (the config named a dtype) or how ``auto`` got its numbers: probe, cache, injected
    measured: str  #: probe (timed now), cache or injected
    cache: str | None  #: the file the measurement is cached in
    key: dict  #: what the cached measurement is valid for (device, torch, kernels)

    @property
    def peak_gflops(self) -> float:
        """Measured GFLOP/s of the chosen dtype (the denominator of a model-FLOPs utilisation)."""
        return self.gflops.get(self.dtype, self.gflops.get("fp32", 0.0))

    @property
    def mixed_precision(self) -> str:
        return ACCELERATE_MODES[self.dtype]

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, TORCH_NAMES[self.dtype])

    @property
    def warning(self) -> str | None:
        """A warning when the config named a dtype the probe measured slower than fp32."""
        asked, fp32 = self.gflops.get(self.requested), self.gflops.get("fp32")
        if self.requested not in LOW_PRECISION or not asked or not fp32 or asked >= fp32:
            return None
        return (
            f"precision={self.requested} is slower than fp32 on this {self.device}: "
            f"{self.requested} matmuls measured {asked:,.1f} GFLOP/s, fp32 {fp32:,.1f} GFLOP/s "
            f"({fp32 / asked:,.1f}x slower).\n  fix: set training.precision=auto (or fp32)"
        )

    def summary(self) -> str:
        numbers = ", ".join(f"{name} {value:,.1f}" for name, value in self.gflops.items())
        how = "chosen by measurement" if self.requested == "auto" else "set in the config"
        where = {"probe": f"probed now, cached in {self.cache}", "cache": f"cached in {self.cache}"}
        measured = where.get(self.measured, f"injected by {PROBE_ENV}")
        return f"precision: {self.dtype} ({how}; matmul GFLOP/s on {self.device}: {numbers}; {measured})"

    def to_dict(self) -> dict:
        return {**asdict(self), "peak_gflops": self.peak_gflops}


def decide(gflops: dict[str, float], margin: float = MARGIN) -> str:
    """fp32 unless a low-precision dtype measured at least ``margin`` times faster."""
    fp32 = gflops.get("fp32", 0.0)
    for name in LOW_PRECISION:
        if fp32 > 0 and gflops.get(name, 0.0) >= margin * fp32:
            return name
    return "fp32"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key(device: str) -> dict:
    """What a measurement depends on: the device, torch's build and its kernel choices."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        name = torch.cuda.get_device_name(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
    else:
        name, capability = _cpu_name(), torch.backends.cpu.get_cpu_capability()
    return {
        "device": device,
        "name": name,
        "capability": capability,
        "threads": torch.get_num_threads() if kind == "cpu" else None,
        "torch": torch.__version__,
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
        "shape": [ROWS, HIDDEN],
    }


def _candidates(device: str) -> list[str]:
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        return ["fp32", "bf16"]
    if kind == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return ["fp32", "fp16"]
    return ["fp32", "bf16", "fp16"]


def _round_s(name: str, device: str, features: int) -> float:
    """Seconds of one linear layer's training matmuls in ``name``: forward ``x @ W.T`` and the
    backward ``g @ W`` and ``g.T @ x``. On AVX2 CPUs bf16 ``g @ W`` runs ~60x slower than the
    forward, so timing the forward alone would hide the trap."""
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, TORCH_NAMES[name])
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    rng = torch.Generator(device=device).manual_seed(0)  # leaves the run's seeded global RNG untouched

    def rand(*shape: int):
        return torch.randn(*shape, generator=rng, device=device).to(dtype)

    weight, x, grad = rand(features, HIDDEN), rand(ROWS, HIDDEN), rand(ROWS, features)
    sync()
    start = time.perf_counter()
    F.linear(x, weight)
    grad @ weight
    grad.t() @ x
    sync()
    return max(time.perf_counter() - start, 1e-9)


def _best_s(name: str, device: str, features: int) -> float:
    """Best of two rounds (other processes' noise only ever adds time); one if a round is slow."""
    first = _round_s(name, device, features)
    return first if first > 0.1 else min(first, _round_s(name, device, features))


def measure(device: str, budget_s: float = BUDGET_S) -> dict[str, float]:
    """Matmul GFLOP/s per dtype the device can run (a dtype that raises is left out).

    The dtypes are timed on the same shape, which grows x4 up to the full MLP width while the
    next size fits in ``budget_s``. A low-precision dtype already slower than fp32 on a shape
    leaves the race (a wider layer only favours fp32 more), so a slow bf16 costs a fraction
    of a second and fp32 still gets measured wide: its number is the machine's peak, not call
    overhead. One that looks faster is confirmed on a layer at least ``HIDDEN`` wide whatever
    the budget: on a narrow one a busy machine's overhead can make fp32 look slow, and the
    choice is cached for good.
    """
    active = []
    for name in _candidates(device):
        try:
            _round_s(name, device, 64)  # warm-up: kernel choice, lazy initialisation
        except (RuntimeError, TypeError):  # no kernel for this dtype here
            continue
        active.append(name)
    deadline, features, gflops = time.perf_counter() + budget_s, 64, {}
    while True:
        seconds = {name: _best_s(name, device, features) for name in active}
        gflops.update({name: round(3 * 2 * ROWS * HIDDEN * features / s / 1e9, 3) for name, s in seconds.items()})
        active = [name for name in active if gflops[name] >= gflops["fp32"]]
        unconfirmed = len(active) > 1 and features < HIDDEN
        over_budget = time.perf_counter() + 4 * sum(seconds[name] for name in active) > deadline
        if features * 4 > 4 * HIDDEN or (over_budget and not unconfirmed):
            return gflops
        features *= 4


def _injected(value: str) -> dict[str, float]:
    text = value if value.lstrip().startswith("{") else None
    if text is None:
        try:
            text = Path(value).read_text()
        except OSError as err:
            raise ConfigError(
                f"{PROBE_ENV}={value}: cannot read it ({err.strerror}).\n"
                '  fix: point it at a JSON file, or give inline JSON like {"fp32": 130, "bf16": 0.9}'
            ) from err
    try:
        data = json.loads(text)
        gflops = {str(k): float(v) for k, v in data.get("gflops", data).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"{PROBE_ENV}={value}: not a JSON object of GFLOP/s per dtype ({err}).\n"
            '  fix: use e.g. {"fp32": 130, "bf16": 0.9}'
        ) from err
    if "fp32" not in gflops:
        raise ConfigError(f'{PROBE_ENV}={value}: no "fp32" entry.\n  fix: add the fp32 GFLOP/s, e.g. {{"fp32": 130}}')
    return gflops


def cache_file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return tunelab_home() / "precision" / f"{digest}.json"


_MEMO: dict[str, dict[str, float]] = {}
#: A CPU probe taken at more runnable processes per core than this was slowed by others.
BUSY_LOAD = 1.0
#: ... and is measured again once the load per core has dropped by at least this much.
QUIETER_BY = 0.5


def _load_per_cpu(device: str) -> float | None:
    """The 1-minute load average per core for a CPU device (None for accelerators and where unknown)."""
    if not device.startswith("cpu"):
        return None
    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)
    except OSError:
        return None


def _stale(cached: dict, device: str) -> bool:
    """Whether a cached probe must be measured again: the loop found a step faster than its peak
    (``stale``), or it ran on a busy CPU that is clearly quieter now."""
    if cached.get("stale"):
        return True
    then, now = cached.get("load_per_cpu"), _load_per_cpu(device)
    return then is not None and now is not None and then > BUSY_LOAD and now <= then - QUIETER_BY


def _write_cache(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def mark_stale(cache: str | os.PathLike | None) -> bool:
    """Flag a cached probe so that the next run measures again (a run beat its peak); True if flagged."""
    if not cache:
        return False
    path = Path(cache)
    try:
        record = json.loads(path.read_text())
        _write_cache(path, {**record, "stale": True})
    except (OSError, ValueError, TypeError):
        return False
    _MEMO.pop(str(path), None)
    return True


def measurements(device: str) -> tuple[dict[str, float], str, Path | None, dict]:
    """``(gflops, how, cache path, key)``; ``how`` is injected, cache, or probe (measured now, then cached).

    A cached probe is trusted until it is known to be low: taken on a busy CPU that is now
    quieter, or flagged by a run that beat its peak (:func:`mark_stale`). It is then measured
    again and each dtype keeps the faster of the two numbers, since other processes' noise only
    ever adds time.
    """
    key = probe_key(device)
    if os.environ.get(PROBE_ENV):
        return _injected(os.environ[PROBE_ENV]), "injected", None, key
    path = cache_file(key)
    if str(path) in _MEMO:
        return _MEMO[str(path)], "cache", path, key
    try:
        cached = json.loads(path.read_text())
        old = {k: float(v) for k, v in cached["gflops"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        cached, old = {}, {}
    if old and not _stale(cached, device):
        gflops, how = old, "cache"
    else:
        load = _load_per_cpu(device)
        fresh = measure(device)
        gflops, how = {name: max(value, old.get(name, 0.0)) for name, value in fresh.items()}, "probe"
        _write_cache(path, {"key": key, "gflops": gflops, "load_per_cpu": load})
    _MEMO[str(path)] = gflops
    return gflops, how, path, key


def choose_precision(requested: str, device: str) -> PrecisionChoice:
    """The dtype for ``requested`` (auto, fp32, bf16, fp16) on ``device`` (cpu, cuda, ...)."""
    gflops, how, path, key = measurements(device)
    dtype = decide(gflops) if requested == "auto" else requested
    source = how if requested == "auto" else "explicit"
    return PrecisionChoice(dtype, requested, device, gflops, source, how, str(path) if path else None, key)


def report_precision(choice: PrecisionChoice, run_dir: Path | None = None) -> None:
    """Print the choice (and a warning if the named dtype is slow) and save it as ``precision.json``."""
    from tunelab.utils.log import console

    console.print(choice.summary(), markup=False, highlight=False, soft_wrap=True)
    if choice.warning:
        console.print("warning: " + choice.warning, markup=False, highlight=False, soft_wrap=True)
    if run_dir is not None:
        (Path(run_dir) / "precision.json").write_text(json.dumps(choice.to_dict(), indent=2))
