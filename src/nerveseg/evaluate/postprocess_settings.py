"""Typed post-processing settings and the report of how they were decided (``postprocessing.json``).

:class:`PostprocessSettings` is what inference applies: four decisions, validated once when built,
so a hand-edited or outdated file fails in one line before any prediction. :class:`PostprocessDecision`
adds how they were chosen on the out-of-fold predictions (scores before/after, every step tried).
Both write and read the same JSON keys as before, so older ``postprocessing.json`` files stay readable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD = 0.5
SETTING_KEYS = ("threshold", "largest_component", "min_area", "presence_threshold")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PostprocessSettings:
    """Threshold, keep-largest-component, minimum area (full-size pixels) and presence gate (None: off).

    The defaults post-process nothing beyond threshold 0.5 (what training's val_score uses).
    """

    threshold: float = DEFAULT_THRESHOLD
    largest_component: bool = False
    min_area: int = 0
    presence_threshold: float | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.threshold) or not 0.0 <= float(self.threshold) < 1.0:
            raise NervesegError(f"post-processing threshold={self.threshold!r} must be a number in [0, 1)")
        if not isinstance(self.largest_component, bool):
            raise NervesegError(f"post-processing largest_component={self.largest_component!r} must be true or false")
        if not _is_number(self.min_area) or self.min_area < 0 or float(self.min_area) != int(self.min_area):
            raise NervesegError(
                f"post-processing min_area={self.min_area!r} must be a non-negative whole number of pixels"
            )
        presence = self.presence_threshold
        if presence is not None and (not _is_number(presence) or not 0.0 <= float(presence) <= 1.0):
            raise NervesegError(f"post-processing presence_threshold={presence!r} must be null or in [0, 1]")
        # normalise numbers read from JSON (1 -> 1.0, 2000.0 -> 2000) so that equal settings compare equal
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "min_area", int(self.min_area))
        object.__setattr__(self, "presence_threshold", None if presence is None else float(presence))

    def to_json(self) -> dict[str, Any]:
        """The JSON-able dict (``version`` plus the four keys)."""
        return {"version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, values: Any, *, source: str = "post-processing settings") -> PostprocessSettings:
        """Settings from a parsed ``postprocessing.json`` (extra keys such as scores are ignored)."""
        if not isinstance(values, Mapping):
            raise NervesegError(f"{source} must be a JSON object, got {type(values).__name__}")
        missing = [key for key in SETTING_KEYS if key not in values]
        if missing:
            raise NervesegError(f"{source} lacks {missing}; expected the file written by decide_postprocessing")
        try:
            return cls(**{key: values[key] for key in SETTING_KEYS})
        except NervesegError as err:
            raise NervesegError(f"{source}: {err}") from err


def as_settings(settings: PostprocessSettings | Mapping[str, Any]) -> PostprocessSettings:
    """``settings`` itself, or the settings read from a parsed JSON mapping (validated)."""
    return settings if isinstance(settings, PostprocessSettings) else PostprocessSettings.from_json(settings)


@dataclass(frozen=True)
class PostprocessDecision:
    """Settings chosen on OOF predictions and the evidence: scores before (raw) and after, steps tried.

    Scores are None for a settings-only file (hand-written); ``steps`` are JSON-able dicts, one per step.
    """

    settings: PostprocessSettings
    oof_score_raw: float | None = None
    oof_score: float | None = None
    n_images: int = 0
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``postprocessing.json`` content (same keys as the untyped dict it replaces)."""
        return {
            **self.settings.to_json(),
            "oof_score_raw": self.oof_score_raw,
            "oof_score": self.oof_score,
            "n_images": self.n_images,
            "resolution": [ORIG_HEIGHT, ORIG_WIDTH],
            "steps": [dict(step) for step in self.steps],
            "seconds": self.seconds,
        }

    def params(self) -> dict[str, Any]:
        """The four settings as a submission run's params."""
        return asdict(self.settings)

    def metrics(self) -> dict[str, float]:
        """``postprocessing_oof_score`` / ``_raw`` where known (a submission run's metrics)."""
        scores = {"postprocessing_oof_score": self.oof_score, "postprocessing_oof_score_raw": self.oof_score_raw}
        return {key: float(value) for key, value in scores.items() if value is not None}

    def describe(self) -> str:
        s = self.settings
        scores = ""
        if self.oof_score_raw is not None and self.oof_score is not None:
            scores = f" (OOF {self.oof_score_raw:.4f} -> {self.oof_score:.4f})"
        return (
            f"threshold {s.threshold}, largest_component {s.largest_component}, min_area {s.min_area}, "
            f"presence_threshold {s.presence_threshold}{scores}"
        )

    @classmethod
    def from_json(cls, values: Any, *, source: str = names.POSTPROCESSING_ARTIFACT) -> PostprocessDecision:
        """A decision read back; only the four settings are required (scores may be absent)."""
        settings = PostprocessSettings.from_json(values, source=source)

        def score(key: str) -> float | None:
            value = values.get(key)
            return float(value) if _is_number(value) else None

        steps = values.get("steps") or ()
        if not isinstance(steps, list | tuple) or not all(isinstance(step, Mapping) for step in steps):
            raise NervesegError(f"{source}: steps must be a list of objects, got {type(steps).__name__}")
        n_images = values.get("n_images", 0)
        return cls(
            settings=settings,
            oof_score_raw=score("oof_score_raw"),
            oof_score=score("oof_score"),
            n_images=int(n_images) if _is_number(n_images) else 0,
            steps=tuple(steps),
            seconds=score("seconds") or 0.0,
        )


__all__ = ["DEFAULT_THRESHOLD", "SCHEMA_VERSION", "PostprocessDecision", "PostprocessSettings", "as_settings"]
