"""The energy reader of :class:`~dasktrain.harness.measure.monitor.ResourceMonitor`.

CPU package energy from RAPL's counters and GPU energy and utilisation from NVML, between a
run's start and stop: only ever measured, never estimated. What cannot be read is NaN, with a
note saying why.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from typing import Any

from ..._compat import has_gpu, import_optional
from ._sources import Sample

logger = logging.getLogger(__name__)

__all__ = ["EnergyMeter", "RAPL_GLOB", "read_rapl"]

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"


def _rapl_domains():
    # Top-level packages only (intel-rapl:0, not the intel-rapl:0:0 sub-zones they contain).
    paths = [
        p
        for p in sorted(glob.glob(RAPL_GLOB))
        if os.path.basename(os.path.dirname(p)).count(":") == 1
    ]
    return [p for p in paths if read_rapl([p])]


def read_rapl(paths=None) -> dict:
    """Read the cumulative RAPL package energy counters in joules: ``{path: joules}``.

    Returns an empty dict when RAPL is absent or not readable (often root-only on Linux).
    """
    paths = _rapl_domains() if paths is None else paths
    out = {}
    for p in paths:
        try:
            with open(p) as f:
                out[p] = int(f.read()) / 1e6
        except (OSError, ValueError):
            continue
    return out


def _rapl_range(path):
    try:
        with open(os.path.join(os.path.dirname(path), "max_energy_range_uj")) as f:
            return int(f.read()) / 1e6
    except (OSError, ValueError):
        return math.nan


class EnergyMeter:
    """CPU energy from RAPL and GPU energy and utilisation from NVML, between start and stop.

    What cannot be read is NaN, with a note saying why; energy is never estimated.
    """

    def __init__(self) -> None:
        self._rapl_start = read_rapl(_rapl_domains())
        # pynvml once started (Any: the module has no annotations)
        self._nvml: Any = None
        self._gpus: list = []
        self._gpu_start: dict = {}
        if has_gpu():
            self._start_nvml()

    def _start_nvml(self):  # pragma: no cover - runs only on a GPU machine
        try:
            pynvml = import_optional("pynvml", "gpu")
            pynvml.nvmlInit()
        except Exception as exc:
            logger.info("GPU present but NVML unavailable (%s): GPU not monitored", exc)
            return
        self._nvml = pynvml
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            self._gpus.append(h)
            try:
                self._gpu_start[i] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3
            except Exception:
                pass  # older GPUs have no energy counter: left unmeasured, not estimated

    def gpu_samples(self, now, elapsed, host) -> list[Sample]:  # pragma: no cover - GPU only
        """One :class:`Sample` per GPU: utilisation % and memory used."""
        out = []
        for i, h in enumerate(self._gpus):
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(h).used
            except Exception:
                continue
            out.append(
                Sample(
                    now,
                    elapsed,
                    "nvml",
                    f"gpu{i}",
                    -1,
                    "gpu",
                    gpu_utilization=float(util),
                    gpu_memory_used=float(used),
                    host=host,
                )
            )
        return out

    def _cpu_joules(self):
        end = read_rapl(list(self._rapl_start))
        total = 0.0
        for p, e0 in self._rapl_start.items():
            d = end.get(p, math.nan) - e0
            if d < 0:  # the counter wrapped around once during the run
                d += _rapl_range(p)
            total += d
        return total

    def stop(self) -> tuple[dict, str]:
        """``(energy, note)``: ``cpu_energy_j``, ``gpu_energy_j``, ``energy_j`` (their sum, NaN
        when neither was measured) and ``energy_measured``; the note says what was not."""
        energy = {"cpu_energy_j": math.nan, "gpu_energy_j": math.nan}
        notes = []
        if self._rapl_start:
            energy["cpu_energy_j"] = self._cpu_joules()
        else:
            notes.append(f"CPU energy not measured (RAPL not readable at {RAPL_GLOB})")
        if self._gpu_start:  # pragma: no cover - GPU only
            nvml = self._nvml
            energy["gpu_energy_j"] = sum(
                nvml.nvmlDeviceGetTotalEnergyConsumption(self._gpus[i]) / 1e3 - e0
                for i, e0 in self._gpu_start.items()
            )
        elif has_gpu():  # pragma: no cover
            notes.append("GPU energy not measured (no NVML energy counter)")
        if self._nvml is not None:  # pragma: no cover - GPU only
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
        measured = [v for v in energy.values() if not math.isnan(v)]
        energy["energy_measured"] = bool(measured)
        energy["energy_j"] = sum(measured) if measured else math.nan
        return energy, "; ".join(notes)
