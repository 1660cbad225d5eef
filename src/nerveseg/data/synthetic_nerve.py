"""The synthetic nerve: its per-subject geometry, the honeycomb patch, unlabelled look-alikes and the mask outline.

The nerve is what the model must find, so its size, shape and position follow the real masks' statistics
(the targets live in ``synthetic_anatomy``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from nerveseg.data.synthetic_anatomy import (
    CANVAS_H,
    CANVAS_W,
    MARGIN,
    NERVE_AREA_MEDIAN,
    NERVE_LOG_AREA_SD_SUBJECT,
    NERVE_LOG_Y_SD_HIGH,
    NERVE_LOG_Y_SD_LOW,
    NERVE_X_MEDIAN,
    NERVE_X_SD_SUBJECT,
    NERVE_Y_MEDIAN,
    SKIN_ROWS,
    ellipse_field,
    smooth_noise,
    soft_step,
)

# ---------------------------------------------------------------------------------------------------------------
# The nerve
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NerveGeometry:
    """Per-subject nerve outline in canvas coordinates: an ellipse with a few low-order boundary harmonics."""

    cx: float
    cy: float
    a: float  # semi-axis along the (rotated) x direction
    b: float  # semi-axis along the (rotated) y direction; b > a: real nerves are taller than wide
    angle: float  # degrees
    harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase)


def sample_nerve_geometry(rng: np.random.Generator) -> NerveGeometry:
    """Draw the subject's nerve so that, after per-frame jitter and motion, the masks match the real statistics.

    Real (580x420): area median 6976 (5-95 % 4664-10347), centroid x median 333, y median 138 (skewed
    downwards), bounding box ~88 wide and ~117 high, so a tilted oval about 1.6 times taller than wide.
    """
    area = NERVE_AREA_MEDIAN * math.exp(rng.normal(0, NERVE_LOG_AREA_SD_SUBJECT))
    aspect = math.exp(rng.normal(math.log(1.55), 0.15))
    a = math.sqrt(area / (math.pi * aspect))
    z = rng.normal()
    y = NERVE_Y_MEDIAN * math.exp(z * (NERVE_LOG_Y_SD_HIGH if z > 0 else NERVE_LOG_Y_SD_LOW))
    x = rng.normal(NERVE_X_MEDIAN, NERVE_X_SD_SUBJECT)
    harmonics = tuple((k, float(rng.uniform(0.0, 0.07)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 4))
    return NerveGeometry(
        cx=float(np.clip(x, 160, 480)) + MARGIN,
        cy=float(np.clip(y, 80, 330)) + MARGIN,
        a=a,
        b=a * aspect,
        angle=float(rng.normal(0, 28)),
        harmonics=harmonics,
    )


def nerve_radius_field(shape: tuple[int, int], cx: float, cy: float, geometry: NerveGeometry) -> np.ndarray:
    """Normalised radius (1 on the outline) of the subject's nerve shape centred at (cx, cy) on a local grid."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    theta = math.radians(geometry.angle)
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    r = np.sqrt((u / geometry.a) ** 2 + (v / geometry.b) ** 2)
    phi = np.arctan2(v / geometry.b, u / geometry.a)
    outline = np.ones_like(r)
    for order, amplitude, phase in geometry.harmonics:
        outline += amplitude * np.cos(order * phi + phase)
    return r / outline


@dataclasses.dataclass(frozen=True)
class NervePatch:
    """The subject's nerve rendered once on a local patch (centre at ``centre``), re-used by every frame."""

    pattern: np.ndarray  # relative echogenicity inside the nerve (mean ~1.05): honeycomb of fascicles
    alpha: np.ndarray  # soft support, 0 outside; blending weight
    radius: np.ndarray  # normalised radius of the outline (1 on it): the annotator's mask is radius <= scale
    centre: tuple[float, float]


def honeycomb_pattern(rng: np.random.Generator, radius: np.ndarray, a: float, b: float) -> np.ndarray:
    """Relative echo of a peripheral nerve in cross-section: dark fascicles in bright perineurium, bright rim.

    This "honeycomb" (hypoechoic round fascicles separated by hyperechoic septa, inside a hyperechoic epineurium)
    is what sonographers recognise. The mean stays near the surrounding tissue's, so the nerve is not simply a
    brighter or darker blob; what identifies it is the pattern and its place in the anatomy.
    """
    shape = radius.shape
    pattern = np.full(shape, 1.05, dtype=np.float32)
    # how clearly the honeycomb shows varies between patients (and makes some nerves subtle)
    fascicle_depth, septa_gain, rim_gain = rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.9), rng.uniform(0.9, 2.6)
    cy0, cx0 = shape[0] / 2, shape[1] / 2
    fascicle_r = rng.uniform(6.5, 11.0)
    n_fascicles = int(np.clip(0.5 * a * b / fascicle_r**2, 4, 16))
    centres: list[tuple[float, float]] = []
    for _ in range(n_fascicles * 20):  # dart throwing: fascicles do not overlap much
        if len(centres) == n_fascicles:
            break
        y = cy0 + rng.uniform(-b, b) * 0.8
        x = cx0 + rng.uniform(-b, b) * 0.8
        yi, xi = int(np.clip(y, 0, shape[0] - 1)), int(np.clip(x, 0, shape[1] - 1))
        if radius[yi, xi] > 0.72:
            continue
        if all((x - px) ** 2 + (y - py) ** 2 > (1.7 * fascicle_r) ** 2 for px, py in centres):
            centres.append((x, y))
    for x, y in centres:
        rf = fascicle_r * rng.uniform(0.75, 1.25)
        r = ellipse_field(shape, x, y, rf * rng.uniform(0.85, 1.15), rf, rng.uniform(0, 180))
        pattern *= 1.0 - fascicle_depth * soft_step(r, 0.35)  # hypoechoic fascicle
        pattern += septa_gain * np.exp(-(((r - 1.15) / 0.2) ** 2)).astype(np.float32)  # perineurium septa
    rim = np.exp(-(((radius - 0.97) / 0.07) ** 2)).astype(np.float32)
    gaps = np.clip(0.6 + 0.8 * smooth_noise(rng, shape, 6.0, 6.0), 0.0, 1.0)
    pattern += rim_gain * rim * gaps  # epineurium: bright, but interrupted like in real scans
    return pattern


def clear_look(pattern: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """The "clear" style's nerve: the honeycomb inside a darker core and a wide bright rim, cues that survive 64x80.

    At the models' 64x80 input (7.25x smaller) a fascicle is 2-3 pixels and the realistic rim under one, so the
    realistic nerve is mostly told by its place; this look keeps the pattern but adds a hypoechoic core (about 0.4 of
    the tissue's echo) and a rim about six model pixels wide, like a nerve imaged at its best.
    """
    core = soft_step(radius / 0.8, 0.3)  # 1 inside 0.68 of the outline, 0 beyond 0.92
    rim = np.exp(-(((radius - 1.0) / 0.16) ** 2)).astype(np.float32)
    return (pattern * (1.0 - 0.6 * core) + 2.5 * rim).astype(np.float32)


def make_nerve_patch(rng: np.random.Generator, geometry: NerveGeometry, *, clear: bool = False) -> NervePatch:
    """Render the subject's nerve on a patch big enough for its outline and rim (``clear``: see ``clear_look``)."""
    half = int(max(geometry.a, geometry.b) * 1.45) + 6
    shape = (2 * half + 1, 2 * half + 1)
    radius = nerve_radius_field(shape, half, half, geometry)
    pattern = honeycomb_pattern(rng, radius, geometry.a, geometry.b)
    if clear:
        pattern = clear_look(pattern, radius)
    alpha = np.clip((1.12 - radius) / 0.12, 0.0, 1.0).astype(np.float32)  # fully opaque up to the outline
    return NervePatch(pattern=pattern, alpha=alpha, radius=radius, centre=(float(half), float(half)))


def nerve_distractor(rng: np.random.Generator, echo: np.ndarray, avoid: NerveGeometry) -> np.ndarray:
    """Return ``echo`` with an unlabelled nerve-like structure far from the plexus (another nerve or a lymph node).

    Honeycomb texture alone must not be enough: the network has to use where the structure lies and what
    surrounds it, as in real scans where the phrenic nerve or cervical roots are not labelled.
    """
    for _ in range(50):
        cx = rng.uniform(MARGIN + 40, CANVAS_W - MARGIN - 40)
        cy = rng.uniform(MARGIN + SKIN_ROWS + 50, CANVAS_H - MARGIN - 40)
        if math.hypot(cx - avoid.cx, cy - avoid.cy) > 2.2 * max(avoid.a, avoid.b) + 40:
            break
    geometry = NerveGeometry(
        cx=cx,
        cy=cy,
        a=rng.uniform(24, 40),
        b=rng.uniform(28, 50),
        angle=rng.uniform(-60, 60),
        harmonics=((2, float(rng.uniform(0, 0.1)), float(rng.uniform(0, 6.28))),),
    )
    patch = make_nerve_patch(rng, geometry)
    return blend_nerve(echo, patch, geometry.cx, geometry.cy, strength=rng.uniform(0.5, 0.9))


def blend_nerve(echo: np.ndarray, patch: NervePatch, cx: float, cy: float, strength: float) -> np.ndarray:
    """Return ``echo`` with the nerve pattern blended in at (cx, cy) with visibility ``strength`` in [0, 1].

    The pattern is scaled to the *local* tissue level (median under the patch), so the nerve's mean follows its
    surroundings; ``strength`` < 1 fades it toward the underlying tissue (out-of-plane or poorly imaged nerve).
    """
    out = echo.copy()
    if strength <= 0:
        return out
    ph, pw = patch.pattern.shape
    x0, y0 = round(cx - patch.centre[0]), round(cy - patch.centre[1])
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = min(pw, echo.shape[1] - x0), min(ph, echo.shape[0] - y0)
    if sx0 >= sx1 or sy0 >= sy1:
        return out
    region = out[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1]
    alpha = patch.alpha[sy0:sy1, sx0:sx1] * float(strength)
    level = float(np.median(region))
    region[...] = region * (1 - alpha) + alpha * level * patch.pattern[sy0:sy1, sx0:sx1]
    return out


def place_mask(patch: NervePatch, cx: float, cy: float, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """The nerve's filled outline, scaled by ``scale``, centred at (cx, cy) on an empty float32 canvas of ``shape``.

    One connected piece by construction (a star-shaped outline); the annotator's centre and scale are passed in so
    the label can disagree slightly with the visible nerve, as hand-drawn outlines do.
    """
    out = np.zeros(shape, dtype=np.float32)
    mask = (patch.radius <= scale).astype(np.float32)
    ph, pw = mask.shape
    x0, y0 = round(cx - patch.centre[0]), round(cy - patch.centre[1])
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = min(pw, shape[1] - x0), min(ph, shape[0] - y0)
    if sx0 < sx1 and sy0 < sy1:
        out[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1] = mask[sy0:sy1, sx0:sx1]
    return out
