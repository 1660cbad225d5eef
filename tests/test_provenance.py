"""nerveseg.provenance: the machine a run names must tell apart the CPUs that give other numbers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nerveseg import provenance

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f

processor\t: 1
cpu family\t: 25
model\t\t: 17
model name\t: something else
"""


def test_cpuinfo_reads_the_first_processor_only(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = provenance._cpuinfo(path)
    assert (info["model name"], info["cpu family"], info["model"]) == ("AMD EPYC", "26", "2")
    assert provenance._cpuinfo(tmp_path / "missing") == {}


def test_a_cpu_is_named_with_its_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two EPYC generations both read "AMD EPYC" and train other weights: family and model tell them apart."""
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # a GPU machine too
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: {"model name": "AMD EPYC", "cpu family": "26", "model": "2"})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert provenance.device_description() == f"CPU: AMD EPYC (family 26 model 2, {cores} cores)"
    monkeypatch.setattr(provenance, "_cpuinfo", dict)  # no /proc/cpuinfo (macOS): the platform's own name
    assert provenance.cpu_description().endswith(f" ({cores} cores)")
