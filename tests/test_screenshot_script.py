"""scripts/screenshot_mlflow.py: its blank-page check (the browser run itself needs chromium and a store)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_mlflow.py"


def load_script():
    spec = importlib.util.spec_from_file_location("screenshot_mlflow", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blank_share(tmp_path: Path) -> None:
    script = load_script()
    blank = np.full((100, 160, 3), 255, np.uint8)
    blank[50, 10:20] = 0  # a loading spinner's worth of pixels is still blank
    cv2.imwrite(str(tmp_path / "blank.png"), blank)
    assert script.blank_share(tmp_path / "blank.png") > script.BLANK_SHARE
    page = blank.copy()
    page[10:40, 10:150] = 230  # a panel and some text-like noise
    page[60:90, 10:150] = np.random.default_rng(0).integers(0, 255, (30, 140, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "page.png"), page)
    assert script.blank_share(tmp_path / "page.png") < script.BLANK_SHARE
    assert script.blank_share(tmp_path / "missing.png") == 1.0


@pytest.mark.slow
def test_the_real_screenshots_are_not_blank() -> None:
    script = load_script()
    for name in ("mlflow_runs", "mlflow_parent_run", "mlflow_fold_run"):
        png = SCRIPT.parents[1] / "docs" / f"{name}.png"
        if png.exists():
            assert script.blank_share(png) < script.BLANK_SHARE, png
