"""Devices a plan is checked against: the GPU list in ``presets/devices.json`` and this machine's RAM."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.memory.estimate import GIB
from tunelab.presets import preset_path

MIB = 2**20


@dataclass(frozen=True)
class Device:
    """A device and how many bytes a plan may use on it."""

    key: str
    label: str
    memory: float  # bytes


def meminfo(field: str, path: Path = Path("/proc/meminfo")) -> float | None:
    """A ``/proc/meminfo`` field in bytes (``MemTotal``, ``MemAvailable``), or None off Linux."""
    try:
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == field:
                return float(rest.split()[0]) * 1024
    except OSError:
        return None
    return None


@cache
def _data() -> dict:
    return json.loads(preset_path("devices.json").read_text())


def gpus() -> list[Device]:
    return [Device(k, v["label"], v["memory_mib"] * MIB) for k, v in _data()["devices"].items()]


def this_machine() -> Device | None:
    total = meminfo("MemTotal")
    return None if total is None else Device("cpu", "this machine's RAM (CPU runs)", total)


def all_devices() -> list[Device]:
    machine = this_machine()
    return gpus() + ([machine] if machine else [])


def find_device(name: str) -> Device:
    """The device ``name`` (a key like ``rtx-4090``, an alias, or ``cpu``).

    Raises:
        ConfigError: unknown name; lists the valid ones.
    """
    key = name.lower()
    key = _data()["aliases"].get(key, key)
    for device in all_devices():
        if device.key == key:
            return device
    valid = ", ".join(d.key for d in all_devices())
    raise ConfigError(f"--fit: unknown device '{name}'. Valid: {valid}")


def fits_on(total: float, devices: list[Device] | None = None) -> list[tuple[Device, bool]]:
    """Every known device (or ``devices``) with whether ``total`` bytes fit on it."""
    return [(d, total <= d.memory) for d in (all_devices() if devices is None else devices)]


def fit_lines(total: float, devices: list[Device] | None = None) -> list[str]:
    """Where ``total`` bytes fit, in words (``fits on: …`` / ``does not fit on: …``).

    The verdict is said, never only coloured: it must read the same with ``NO_COLOR``, in a log
    or to a screen reader, and a plan no device holds must not look like a list of options.
    """
    results = fits_on(total, devices)
    fit = [d.key for d, ok in results if ok]
    short = [d for d, ok in results if not ok]
    lines = [f"fits on: {', '.join(fit) if fit else 'no listed device'}"]
    if not short:
        return [*lines, "does not fit on: none"]
    largest = max(short, key=lambda d: d.memory)
    return [*lines, f"does not fit on: {', '.join(d.key for d in short)} (needs {total / GIB:,.2f} GiB; "
                    f"the largest of these, {largest.key}, has {largest.memory / GIB:,.2f} GiB)"]
