"""The demo and honesty benchmarks' argument handling (no training here: they take an hour to run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_demo_seeds_defaults_are_the_makefiles_demo_set_and_seeds_1_to_5() -> None:
    demo = load("demo_seeds")
    args = demo.parse_args([])
    assert args.seeds == [1, 2, 3, 4, 5]
    sizes = demo.makefile_demo_sizes()
    assert (args.subjects, args.images, args.test, args.data_seed) == (
        sizes["subjects"],
        sizes["images"],
        sizes["test"],
        sizes["data_seed"],
    )
    assert -(-args.test // args.images) >= 8  # issue 14: a held-out set of at least 8 subjects


def test_demo_seeds_reads_lists_ranges_overrides_and_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    demo = load("demo_seeds")
    assert demo.parse_seeds("3,1-2,2") == [3, 1, 2]
    args = demo.parse_args(["--seeds", "7", "--subjects", "4", "--set", "epochs=2"])
    assert args.seeds == [7] and args.subjects == 4 and args.overrides == {"epochs": "2"}
    for bad in (["--seeds", "a"], ["--seeds", "5-1"], ["--test", "0"], ["--set", "epochs"]):
        with pytest.raises(SystemExit) as exit_info:
            demo.parse_args(bad)
        assert exit_info.value.code == 2
    assert "--seeds" in capsys.readouterr().err


def test_demo_seeds_finds_a_missing_makefile_variable(tmp_path: Path) -> None:
    demo = load("demo_seeds")
    makefile = tmp_path / "Makefile"
    makefile.write_text("DEMO_SUBJECTS ?= 3\nDEMO_IMAGES ?= 4\nDEMO_TEST ?= 40\n")
    with pytest.raises(SystemExit, match="DEMO_SEED"):
        demo.makefile_demo_sizes(makefile)
    makefile.write_text(makefile.read_text() + "DEMO_SEED ?= 9\n")
    with pytest.raises(SystemExit, match="DEMO_FOLDS"):
        demo.makefile_demo_sizes(makefile)
    makefile.write_text(makefile.read_text() + "DEMO_FOLDS ?= 4\n")
    assert demo.makefile_demo_sizes(makefile) == {"subjects": 3, "images": 4, "test": 40, "data_seed": 9, "folds": 4}
    assert demo.makefile_demo_style(makefile) == "realistic"  # the generator's default when none is named
    makefile.write_text(makefile.read_text() + "DEMO_STYLE ?= clear\n")
    assert demo.makefile_demo_style(makefile) == "clear"


def test_the_demo_benchmarks_default_to_the_makefiles_style() -> None:
    style = load("demo_seeds").makefile_demo_style()
    assert style in {"clear", "realistic"}
    assert load("demo_seeds").parse_args([]).style == style
    assert load("cv_honesty").parse_args([]).style == style
    assert load("cv_honesty").parse_args(["--style", "realistic"]).style == "realistic"


def test_cv_honesty_defaults_to_the_configs_rule_and_checks_the_rules() -> None:
    honesty = load("cv_honesty")
    args = honesty.parse_args([])
    assert args.datasets == 10 and args.rules == ["last"]  # experiments/demo.yaml's checkpoint rule
    assert honesty.parse_args(["--rules", "last,inner,best_val", "--datasets", "3"]).rules == [
        "last",
        "inner",
        "best_val",
    ]
    assert honesty.parse_args(["--small"]).datasets == 1
    for bad in (["--rules", "last,newest"], ["--rules", ","], ["--set", "epochs"], ["--test-subjects", "0"]):
        with pytest.raises(SystemExit):
            honesty.parse_args(bad)


def test_the_late_drop_is_measured_against_the_second_half() -> None:
    protocol = load("protocol")
    assert protocol.late_drop([0.1, 0.9, 0.5, 0.6, 0.4]) == pytest.approx(0.2)  # best of [0.5, 0.6, 0.4] is 0.6
    assert protocol.late_drop([0.2, 0.3, 0.4]) == 0.0


def test_winners_curse_defaults_to_the_demo_set_and_searches_equivalent_trials(tmp_path: Path) -> None:
    from nerveseg.config import load_config

    curse = load("winners_curse")
    args = curse.parse_args([])
    sizes = load("demo_seeds").makefile_demo_sizes()
    assert (args.trials, args.folds, args.subjects, args.images) == (8, 5, sizes["subjects"], sizes["images"])
    space = curse.equivalent_space(load_config(args.config))
    learning_rate, augment = space.params
    assert (learning_rate.name, augment.name) == ("learning_rate", "augment_strength")
    assert learning_rate.low == pytest.approx(0.75e-3) and learning_rate.high == pytest.approx(1e-3 / 0.75)
    assert (augment.low, augment.high) == pytest.approx((0.8, 1.2))
    assert [p.name for p in curse.equivalent_space(load_config(None)).params] == ["learning_rate"]  # no augmentation
    (tmp_path / "taken.json").write_text("{}")
    for bad in (["--trials", "0"], ["--set", "epochs"], ["--out", str(tmp_path / "taken.json")]):
        with pytest.raises(SystemExit) as exit_info:
            curse.parse_args(bad)
        assert exit_info.value.code == 2
