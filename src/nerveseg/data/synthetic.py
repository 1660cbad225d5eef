"""Synthetic brachial-plexus ultrasound in Kaggle's exact layout, so the pipeline can run without the real data.

The real competition data cannot live in this repository, yet every stage (indexing, caching, folds, training,
submission, scoring) must be exercised end to end. This module writes a stand-in that is *fair*, not merely
well-formed: the image statistics, the nerve's size/shape/position, the per-subject empty share, the slow drift
between consecutive frames and the contradictory near-duplicate pairs all follow what was measured on the 5635
real training masks (see ``../shared/real_sample/README.md``). Above all it is not trivially separable: the nerve
is a honeycomb pattern (bright rim and septa around dark fascicles) whose mean is close to the surrounding tissue,
bright fascia and dark vessels are everywhere, and whether a frame is labelled depends on how clearly the nerve
is in the imaging plane -- faded nerves appear on both sides of the annotator's cut-off, and the annotator is
inconsistent near it, as are hand-drawn outlines. An intensity threshold therefore scores no better than predicting
"empty" everywhere, while a U-Net can learn shape and context (a quick check with a small U-Net trained on 1620
frames closed about a third of the gap between the all-empty score and 1, about what U-Nets do on the real data).

How a frame is made (each step a small pure function below):

1. per subject, an *anatomy canvas* slightly larger than the frame: echogenicity of curved tissue layers with
   streaky texture, muscle bellies, bright fascia bands, dark vessels, 0-2 unlabelled nerve-like distractors; plus
   the subject's nerve (a honeycomb patch and its outline) and its per-subject empty share;
2. per frame, a slowly drifting state (probe translation/rotation/scale, a smooth elastic deformation, the nerve's
   own drift, its visibility, the label and the annotator's outline error); the nerve is blended in with that
   visibility, the artery pulsates;
3. the canvas is warped into the 580x420 frame (the mask with the same map), skin bands are added (they move with
   the probe, not the anatomy), multiplicative Rayleigh-like speckle is applied and the result is log-compressed
   to 8 bits like a scanner's display.

Everything derives from one ``numpy.random.SeedSequence``: one child per subject, so the output is byte-identical
for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from nerveseg.logs import progress_bar
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH
from nerveseg.errors import NervesegError
from nerveseg.evaluate.postprocess import largest_component

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["generate", "render_subject", "write_tiff"]

HEIGHT, WIDTH = ORIG_HEIGHT, ORIG_WIDTH
MARGIN = 56  # canvas margin, so probe motion never reveals the canvas edge
CANVAS_H, CANVAS_W = HEIGHT + 2 * MARGIN, WIDTH + 2 * MARGIN
SKIN_ROWS = 44  # skin and subcutis lie under the probe: they move with it, not with the anatomy

# Kaggle's TIFFs: LZW, no predictor, one strip (cv2's default adds a horizontal predictor and 14-row strips).
TIFF_PARAMS = [
    cv2.IMWRITE_TIFF_COMPRESSION,
    cv2.IMWRITE_TIFF_COMPRESSION_LZW,
    cv2.IMWRITE_TIFF_PREDICTOR,
    cv2.IMWRITE_TIFF_PREDICTOR_NONE,
    cv2.IMWRITE_TIFF_ROWSPERSTRIP,
    HEIGHT,
]

# Real statistics (all 5635 training masks, 580x420), used as targets.
NERVE_AREA_MEDIAN = 6976.0
NERVE_LOG_AREA_SD_SUBJECT = 0.20  # between subjects; frames add ~0.1 more, total ~0.24 (5-95 %: 4664-10347)
NERVE_X_MEDIAN, NERVE_X_SD_SUBJECT = 333.0, 32.0  # frame motion adds ~15 px: 5-95 % ~ 268-400
NERVE_Y_MEDIAN = 138.0  # skewed: 5 % 101, 95 % 224
NERVE_LOG_Y_SD_LOW, NERVE_LOG_Y_SD_HIGH = 0.16, 0.27
EMPTY_SHARE_BETA = (2.4, 1.7)  # per-subject empty share: median ~0.6, range ~0.1-0.98 over 47 subjects
EMPTY_SHARE_RANGE = (0.1, 0.98)  # the real extremes; the Beta's rare tails beyond them are clipped
CONTRADICTORY_PAIR_RATE = 45 / 5635  # near-identical consecutive frames, one labelled and one not
# sd of the annotator's inconsistency on the latent visibility scale (sd 1): the label disagrees with what the
# image shows for atan(0.4)/pi ~ 12 % of frames, which caps presence accuracy as the real labels do
ANNOTATOR_NOISE = 0.4


DYNAMIC_RANGE_DB = 36.0  # display: dB mapped onto 0..255
DISPLAY_OFFSET = 0.34  # tissue of unit echogenicity sits at this fraction of the range before the gray map
DISPLAY_GAMMA = 1.5  # convex gray map: dark tissue compressed, bright reflectors spread out
FIBRE_GAIN = 1.2  # brightness of the fibrillar texture (log scale)
NOISE_FLOOR = 0.3  # receiver noise: even anechoic lumens are not black (real frames: 1st percentile ~9)


# ---------------------------------------------------------------------------------------------------------------
# Small random fields
# ---------------------------------------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_y: float, sigma_x: float) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian noise low-passed anisotropically.

    Ultrasound texture is streaky along the beam's lateral direction (x): real images have a horizontal
    autocorrelation length several times the vertical one, which a wider ``sigma_x`` reproduces.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    field = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def speckle(
    rng: np.random.Generator, shape: tuple[int, int], sigma_y: float = 2.0, sigma_x: float = 5.0, looks: int = 2
) -> np.ndarray:
    """Multiplicative speckle with unit mean: the magnitude of low-passed complex Gaussian noise, ``looks`` compounded.

    Coherent scattering from many sub-resolution scatterers gives a complex Gaussian echo whose envelope is
    Rayleigh-distributed; low-passing before the magnitude sets the speckle grain (elongated laterally, like the
    point-spread function of a linear probe). Modern scanners compound several looks, which removes most of the
    near-black speckle holes a single Rayleigh look has (real frames have almost no pixels at 0). The grain is
    coarser than a pixel, so the field is drawn at half resolution and upsampled: 4x fewer random numbers.
    """
    small = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    power = np.zeros(small, dtype=np.float32)
    for _ in range(2 * looks):
        component = rng.standard_normal(small, dtype=np.float32)
        component = cv2.GaussianBlur(component, (0, 0), sigma_x / 2, sigmaY=sigma_y / 2)
        power += component * component
    envelope = cv2.resize(np.sqrt(power), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return envelope / float(envelope.mean())


def _ellipse_field(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle_deg: float) -> np.ndarray:
    """Normalised elliptic radius (1 on the ellipse) over a grid of ``shape``; cheap building block for blobs."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def _soft_step(r: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (r < 1), 0 outside, with a smooth transition of relative width ``edge`` (no aliasing at 580x420)."""
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Subject anatomy: tissue layers, muscles, fascia, vessels
# ---------------------------------------------------------------------------------------------------------------


def layer_boundaries(rng: np.random.Generator, width: int, height: int) -> list[np.ndarray]:
    """Depths (one y per column) of gently curved tissue interfaces, ordered top to bottom.

    Tissue planes in the neck run roughly parallel to the skin but undulate and tilt; the interfaces are where the
    bright fascia lie, so they are shared by :func:`tissue_layers` and :func:`fascia_bands`.
    """
    n = int(rng.integers(6, 10))
    depths = np.sort(rng.uniform(SKIN_ROWS + 20, height - 20, size=n))
    x = np.arange(width, dtype=np.float32)
    boundaries = []
    for depth in depths:
        curve = np.full(width, depth, dtype=np.float32)
        for _ in range(3):
            amplitude = rng.uniform(3, 22)
            period = rng.uniform(180, 900)
            curve += amplitude * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        curve += rng.uniform(-0.08, 0.08) * (x - width / 2)
        boundaries.append(curve)
    return boundaries


def tissue_layers(rng: np.random.Generator, boundaries: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Echogenicity map (around 1) of stacked tissue layers with streaky, fibrillar texture.

    Each layer gets its own mean level, so neighbouring regions differ in brightness the way subcutis, muscle and
    connective tissue do; a global threshold then cuts through tissue, not around the nerve. Sparse short bright
    fibres (the tops of laterally stretched noise) give the fibrillar look of muscle and connective tissue.
    """
    height = shape[0]
    yy = np.arange(height, dtype=np.float32)[:, None]
    levels = np.exp(rng.normal(0.0, 0.6, size=len(boundaries) + 1)).astype(np.float32)
    layer_index = np.zeros(shape, dtype=np.int32)
    for boundary in boundaries:
        layer_index += (yy > boundary[None, :]).astype(np.int32)
    base = levels[layer_index]
    base = cv2.GaussianBlur(base, (0, 0), 2.0)
    coarse = smooth_noise(rng, shape, 8.0, 26.0)
    fine = smooth_noise(rng, shape, 2.0, 8.0)
    fibres = np.clip(smooth_noise(rng, shape, 1.0, 7.0) - 1.3, 0.0, None)
    texture = np.exp(0.75 * coarse + 0.35 * fine + FIBRE_GAIN * fibres)
    return (base * texture).astype(np.float32)


def muscle_bellies(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Multiplicative map darkening a few large oval regions and striating them with bright horizontal fibres.

    Muscles (scalenes, sternocleidomastoid) are the large hypoechoic areas around the plexus; their internal
    perimysium streaks are bright like fascia, which keeps "dark" and "bright" from meaning "not nerve"/"nerve".
    """
    height, width = shape
    out = np.ones(shape, dtype=np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0, width), rng.uniform(SKIN_ROWS + 60, height)
        rx, ry = rng.uniform(60, 170), rng.uniform(35, 90)
        inside = _soft_step(_ellipse_field(shape, cx, cy, rx, ry, rng.uniform(-25, 25)), 0.15)
        fibres = np.clip(smooth_noise(rng, shape, 1.2, 14.0), 0, None)
        out *= 1.0 - inside * (rng.uniform(0.3, 0.55) - 0.6 * fibres)
    return np.clip(out, 0.3, 2.5)


def draw_band(rng: np.random.Generator, layer: np.ndarray, points: np.ndarray, thickness: float, value: float) -> None:
    """Draw one bright band into ``layer`` (a scratch array owned by the caller) along ``points``.

    Real fascia taper at their ends and their brightness wanders along their length (the reflection is specular,
    so it depends on the local angle to the beam); constant-width uniform lines look like ropes.
    """
    n = len(points)
    t = np.linspace(0.0, 1.0, n)
    taper = np.sin(np.pi * np.clip(t, 0.02, 0.98)) ** 0.6
    wander = np.exp(0.45 * np.cumsum(rng.normal(0, 0.35, size=n)))
    wander /= wander.mean()
    pts = np.round(points).astype(np.int32)
    for i in range(n - 1):
        width = max(1, round(thickness * 0.5 * (taper[i] + taper[i + 1])))
        level = float(value * wander[i] * taper[i])
        p0, p1 = (int(pts[i, 0]), int(pts[i, 1])), (int(pts[i + 1, 0]), int(pts[i + 1, 1]))
        cv2.line(layer, p0, p1, level, width, cv2.LINE_AA)


def fascia_bands(rng: np.random.Generator, boundaries: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Additive echo of bright curved bands: long stretches along layer interfaces plus short oblique streaks.

    Fascia and tendon sheaths are specular reflectors and are the brightest things in the image (often saturated
    at 255). They also pass near and through the nerve's neighbourhood, so bright pixels are no cue by themselves.
    """
    height, width = shape
    layer = np.zeros(shape, dtype=np.float32)
    for i, boundary in enumerate(boundaries):
        # the shallowest interface (superficial cervical fascia) is a near-continuous bright line
        x0 = 0 if i == 0 else int(rng.integers(0, width - 120))
        x1 = width if i == 0 else int(min(width, x0 + rng.integers(120, width)))
        xs = np.arange(x0, x1, 8)
        pts = np.stack([xs, boundary[xs] + rng.normal(0, 0.8, size=xs.size)], axis=1)
        draw_band(rng, layer, pts, rng.uniform(3, 7), rng.uniform(4.0, 14.0))
    for _ in range(int(rng.integers(45, 75))):
        length = rng.uniform(15, 170)
        angle = math.radians(rng.normal(0, 16))
        curvature = rng.normal(0, 0.004)
        cx, cy = rng.uniform(0, width), rng.uniform(SKIN_ROWS + 10, height)
        t = np.linspace(-length / 2, length / 2, max(4, int(length / 8)))
        xs = cx + t * math.cos(angle)
        ys = cy + t * math.sin(angle) + curvature * t**2
        brightness = math.exp(rng.uniform(math.log(1.0), math.log(40.0)))
        draw_band(rng, layer, np.stack([xs, ys], axis=1), rng.uniform(2, 7), brightness)
    return cv2.GaussianBlur(layer, (0, 0), sigmaX=1.6, sigmaY=1.0)


@dataclasses.dataclass(frozen=True)
class Vessel:
    """A dark, fluid-filled oval (artery or vein) in canvas coordinates; arteries pulsate from frame to frame."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    pulsatile: bool


def place_vessels(rng: np.random.Generator, nerve: NerveGeometry) -> list[Vessel]:
    """An artery beside the nerve (the subclavian/carotid landmark anaesthetists look for) plus 0-2 veins.

    Vessels are the main distractors: round, nerve-sized, and dark inside with a bright wall.
    """
    side = rng.choice([-1.0, 1.0])
    distance = rng.uniform(1.6, 2.3) * max(nerve.a, nerve.b)
    direction = math.radians(rng.uniform(-40, 70))
    r = rng.uniform(18, 30)
    vessels = [
        Vessel(
            cx=nerve.cx + side * distance * math.cos(direction),
            cy=nerve.cy + distance * math.sin(direction),
            rx=r * rng.uniform(0.9, 1.15),
            ry=r * rng.uniform(0.85, 1.05),
            angle=rng.uniform(-20, 20),
            pulsatile=True,
        )
    ]
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(10, 28)
        vessels.append(
            Vessel(
                cx=rng.uniform(40, CANVAS_W - 40),
                cy=rng.uniform(SKIN_ROWS + MARGIN + 40, CANVAS_H - 40),
                rx=r * rng.uniform(1.0, 1.8),
                ry=r,
                angle=rng.uniform(-30, 30),
                pulsatile=False,
            )
        )
    return vessels


def paint_vessel(echo: np.ndarray, vessel: Vessel, scale: float = 1.0) -> np.ndarray:
    """Return ``echo`` with the vessel: anechoic lumen, bright wall, brighter tissue below (acoustic enhancement)."""
    out = echo.copy()
    pad = int(max(vessel.rx, vessel.ry) * scale * 2.2) + 4
    x0, x1 = max(0, int(vessel.cx) - pad), min(echo.shape[1], int(vessel.cx) + pad)
    y0, y1 = max(0, int(vessel.cy) - pad), min(echo.shape[0], int(vessel.cy) + 2 * pad)
    if x0 >= x1 or y0 >= y1:
        return out
    local = (y1 - y0, x1 - x0)
    r = _ellipse_field(local, vessel.cx - x0, vessel.cy - y0, vessel.rx * scale, vessel.ry * scale, vessel.angle)
    lumen = _soft_step(r, 0.3)
    wall = np.exp(-(((r - 1.0) / 0.09) ** 2)).astype(np.float32)
    below = np.arange(local[0], dtype=np.float32)[:, None] + y0 > vessel.cy
    enhancement = 1.0 + 0.25 * below * np.exp(-(((r - 1.6) / 0.6) ** 2)) * (1 - lumen)
    patch = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = patch * (1 - 0.8 * lumen) * enhancement + 2.0 * wall
    return out


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
        r = _ellipse_field(shape, x, y, rf * rng.uniform(0.85, 1.15), rf, rng.uniform(0, 180))
        pattern *= 1.0 - fascicle_depth * _soft_step(r, 0.35)  # hypoechoic fascicle
        pattern += septa_gain * np.exp(-(((r - 1.15) / 0.2) ** 2)).astype(np.float32)  # perineurium septa
    rim = np.exp(-(((radius - 0.97) / 0.07) ** 2)).astype(np.float32)
    gaps = np.clip(0.6 + 0.8 * smooth_noise(rng, shape, 6.0, 6.0), 0.0, 1.0)
    pattern += rim_gain * rim * gaps  # epineurium: bright, but interrupted like in real scans
    return pattern


def make_nerve_patch(rng: np.random.Generator, geometry: NerveGeometry) -> NervePatch:
    """Render the subject's nerve on a patch big enough for its outline and rim."""
    half = int(max(geometry.a, geometry.b) * 1.45) + 6
    shape = (2 * half + 1, 2 * half + 1)
    radius = nerve_radius_field(shape, half, half, geometry)
    pattern = honeycomb_pattern(rng, radius, geometry.a, geometry.b)
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


# ---------------------------------------------------------------------------------------------------------------
# Skin, speckle and display
# ---------------------------------------------------------------------------------------------------------------


def skin_bands(rng: np.random.Generator, width: int) -> np.ndarray:
    """Echo of the top ``SKIN_ROWS`` rows: bright, nearly flat epidermis/dermis lines under the probe.

    Real frames all start with ~35 rows of bright horizontal bands (row means 150-170 against ~100 below); they are
    attached to the probe, so they do not drift with the anatomy.
    """
    rows = np.arange(SKIN_ROWS, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    band = np.full((SKIN_ROWS, width), 2.5, dtype=np.float32)
    for centre in (2.0, *np.sort(rng.uniform(6, SKIN_ROWS - 10, size=int(rng.integers(3, 6))))):
        wobble = rng.uniform(0, 2.5) * np.sin(2 * np.pi * x / rng.uniform(200, 900) + rng.uniform(0, 6.28))
        band += rng.uniform(2.0, 8.0) * np.exp(-(((rows - centre - wobble) / rng.uniform(0.8, 2.0)) ** 2))
    return band * np.exp(0.25 * smooth_noise(rng, (SKIN_ROWS, width), 1.0, 25.0))


def depth_gain(height: int = HEIGHT) -> np.ndarray:
    """Column vector of the beam's net gain with depth: flat, then falling as attenuation outruns the TGC.

    Real frames lose about half their brightness over the deepest third (row means ~100 -> ~55); this belongs to
    the probe, not the anatomy, so it is applied in frame coordinates after the warp.
    """
    y = np.arange(height, dtype=np.float32)[:, None] / height
    return (1.0 - 0.55 * np.clip((y - 0.45) / 0.55, 0.0, 1.0) ** 1.5).astype(np.float32)


DEPTH_GAIN = depth_gain()


def apply_skin(echo: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Return ``echo`` with the skin bands blended over its top rows (full weight at the top, fading out)."""
    out = echo.copy()
    weight = np.clip(1.25 - np.arange(SKIN_ROWS, dtype=np.float32) / (0.8 * SKIN_ROWS), 0.0, 1.0)[:, None]
    out[:SKIN_ROWS] = out[:SKIN_ROWS] * (1 - weight) + skin * weight
    return out


def log_compress(intensity: np.ndarray, gain_db: float) -> np.ndarray:
    """Map linear echo intensity to 8 bits like a scanner: log compression, then a gray map that expands brights.

    Log compression turns multiplicative speckle into additive grain and saturates specular reflectors at 255,
    which is what gives real frames their heavy bright tail (3 % of pixels at 255, median ~77, 95th percentile
    ~226); the convex gray map reproduces that skew. ``gain_db`` shifts the brightness (operator gain), so subjects
    differ in overall brightness as in the real set.
    """
    db = 20.0 * np.log10(np.maximum(intensity, 1e-4)) + gain_db
    level = np.clip((db + DYNAMIC_RANGE_DB * DISPLAY_OFFSET) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    return 255.0 * level**DISPLAY_GAMMA


def probe_overlay(image: np.ndarray) -> np.ndarray:
    """Return ``image`` with the scanner artefacts every real frame has: black first column, small orientation mark."""
    out = image.copy()
    out[:, 0] = 0
    marker = np.array([[296, 0], [301, 9], [306, 0]], dtype=np.int32)
    cv2.polylines(out, [marker], False, 20, 1, cv2.LINE_8)
    out[0, 296:307] = 0
    return out


# ---------------------------------------------------------------------------------------------------------------
# Subjects and frames
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Subject:
    """One patient's static anatomy and acquisition settings; frames are rendered from it with a drifting state."""

    echo: np.ndarray  # canvas echogenicity without the nerve and the pulsating artery
    arteries: tuple[Vessel, ...]
    nerve: NerveGeometry
    nerve_patch: NervePatch
    skin: np.ndarray
    empty_share: float
    gain_db: float


def make_subject(rng: np.random.Generator) -> Subject:
    """Draw a subject: layered tissue, muscles, fascia, vessels, nerve-like distractors, the nerve, settings."""
    shape = (CANVAS_H, CANVAS_W)
    boundaries = layer_boundaries(rng, CANVAS_W, CANVAS_H)
    echo = tissue_layers(rng, boundaries, shape) * muscle_bellies(rng, shape)
    echo = echo + fascia_bands(rng, boundaries, shape)
    nerve = sample_nerve_geometry(rng)
    vessels = place_vessels(rng, nerve)
    for vessel in vessels:
        if not vessel.pulsatile:
            echo = paint_vessel(echo, vessel)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        echo = nerve_distractor(rng, echo, nerve)
    return Subject(
        echo=echo.astype(np.float32),
        arteries=tuple(v for v in vessels if v.pulsatile),
        nerve=nerve,
        nerve_patch=make_nerve_patch(rng, nerve),
        skin=skin_bands(rng, WIDTH),
        empty_share=float(np.clip(rng.beta(*EMPTY_SHARE_BETA), *EMPTY_SHARE_RANGE)),
        gain_db=float(rng.normal(0.0, 1.5)),
    )


@dataclasses.dataclass(frozen=True)
class FrameState:
    """What changes from one frame to the next: probe pose, tissue deformation, nerve drift and visibility."""

    shift_x: float
    shift_y: float
    rotation: float  # degrees, about the probe's centre
    zoom: float
    flow: np.ndarray  # (2, 4, 6) coarse elastic displacement (x, y) in pixels
    nerve_dx: float
    nerve_dy: float
    strength: float  # nerve visibility in [0, 1]
    labelled: bool
    outline_dx: float  # the annotator's outline vs the visible nerve: small offset and scale error
    outline_dy: float
    outline_scale: float
    pulse: float  # artery radius factor
    speckle_seed: int


def ar1(rng: np.random.Generator, n: int, rho: float, sd: float, size: tuple[int, ...] = ()) -> np.ndarray:
    """A stationary AR(1) series of ``n`` steps: slow drift with sd ``sd``, lag-1 correlation ``rho``."""
    out = np.empty((n, *size), dtype=np.float64)
    out[0] = rng.normal(0, sd, size=size)
    innovation_sd = sd * math.sqrt(1 - rho**2)
    for t in range(1, n):
        out[t] = rho * out[t - 1] + rng.normal(0, innovation_sd, size=size)
    return out


def frame_states(rng: np.random.Generator, n: int, empty_share: float) -> list[FrameState]:
    """States for ``n`` consecutive frames of one subject.

    Visibility follows a slow latent process; the annotator labels a frame when it exceeds the subject's cut-off,
    placed so the subject's empty share is ``empty_share``. Rendered strength is a smooth function of the latent
    plus the annotator's inconsistency, so frames just below the cut-off (empty) look much like frames just above
    it (labelled): presence is hard to call near the boundary yet learnable away from it. The drawn outline is off
    by a few pixels and a few percent in size, as hand-drawn outlines are. A few consecutive pairs are then made
    near-identical with opposite labels, as the ~45 contradictory pairs of the real set.
    """
    latent = ar1(rng, n, rho=0.8, sd=1.0)
    n_empty = round(empty_share * n)
    order = np.argsort(latent, kind="stable")
    labelled = np.ones(n, dtype=bool)
    labelled[order[:n_empty]] = False
    if 0 < n_empty < n:
        cut = 0.5 * (latent[order[n_empty - 1]] + latent[order[n_empty]])
    else:
        cut = latent.max() + 0.5 if n_empty == n else latent.min() - 0.5
    # what the image shows is the latent plus the annotator's inconsistency: labels near the cut are a coin flip
    shown = latent + rng.normal(0.0, ANNOTATOR_NOISE, size=n)
    strength = 1.0 / (1.0 + np.exp(-(shown - cut) / 0.35))
    outline = rng.normal(0.0, 1.0, size=(n, 3)) * np.array([3.5, 3.5, 0.05])

    shift = ar1(rng, n, 0.93, 1.0, (2,)) * np.array([14.0, 7.0])
    rotation = ar1(rng, n, 0.9, 1.5)
    zoom = np.exp(ar1(rng, n, 0.9, 0.03))
    flow = ar1(rng, n, 0.9, 3.0, (2, 4, 6))
    nerve = ar1(rng, n, 0.85, 1.0, (2,)) * np.array([7.0, 5.0])
    pulse = 1.0 + 0.08 * np.sin(rng.uniform(0, 2 * np.pi) + np.arange(n) * rng.uniform(0.8, 2.2))
    seeds = rng.integers(0, 2**31 - 1, size=n)
    states = [
        FrameState(
            shift_x=float(shift[t, 0]),
            shift_y=float(shift[t, 1]),
            rotation=float(rotation[t]),
            zoom=float(zoom[t]),
            flow=flow[t].astype(np.float32),
            nerve_dx=float(nerve[t, 0]),
            nerve_dy=float(nerve[t, 1]),
            strength=float(strength[t]),
            labelled=bool(labelled[t]),
            outline_dx=float(outline[t, 0]),
            outline_dy=float(outline[t, 1]),
            outline_scale=float(np.clip(1.0 + outline[t, 2], 0.85, 1.15)),
            pulse=float(pulse[t]),
            speckle_seed=int(seeds[t]),
        )
        for t in range(n)
    ]
    return add_contradictory_pairs(rng, states)


def add_contradictory_pairs(rng: np.random.Generator, states: list[FrameState]) -> list[FrameState]:
    """Return ``states`` where a few frames copy their predecessor (sub-pixel shift, same speckle), label flipped.

    In the real set about 45 of 5635 frames have a near-identical neighbour with the opposite label; a model
    cannot get both right, which caps the achievable score the same way here.
    """
    n = len(states)
    out = list(states)
    if n < 2:
        return out
    n_pairs = int(rng.binomial(n - 1, CONTRADICTORY_PAIR_RATE))
    used: set[int] = set()
    for start in rng.permutation(n - 1)[: 4 * n_pairs]:
        if n_pairs == 0:
            break
        t = int(start)
        if {t - 1, t, t + 1, t + 2} & used:
            continue
        used.update({t, t + 1})
        n_pairs -= 1
        src = out[t]
        out[t + 1] = dataclasses.replace(src, shift_x=src.shift_x + 0.6, labelled=not src.labelled)
    return out


_FRAME_GRID = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)  # (y, x) of every frame pixel


def warp_maps(state: FrameState) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps from frame pixels to canvas coordinates: probe shift, rotation and zoom plus elastic flow."""
    yy, xx = _FRAME_GRID
    theta = math.radians(state.rotation)
    c, s = math.cos(theta) * state.zoom, math.sin(theta) * state.zoom
    xc = xx - WIDTH / 2
    flow_x = cv2.resize(state.flow[0], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    flow_y = cv2.resize(state.flow[1], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    map_x = MARGIN + WIDTH / 2 + c * xc - s * yy + state.shift_x + flow_x
    map_y = MARGIN + s * xc + c * yy + state.shift_y + flow_y
    return map_x.astype(np.float32), map_y.astype(np.float32)


MIN_MASK_AREA = 2000  # real minimum is 2684; a nerve pushed mostly out of frame is not labelled


def render_frame(subject: Subject, state: FrameState) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame: returns (image uint8 (420, 580), mask uint8 (420, 580) with values 0/255)."""
    echo = subject.echo
    for artery in subject.arteries:
        echo = paint_vessel(echo, artery, scale=state.pulse)
    cx = subject.nerve.cx + state.nerve_dx
    cy = subject.nerve.cy + state.nerve_dy
    echo = blend_nerve(echo, subject.nerve_patch, cx, cy, state.strength)
    map_x, map_y = warp_maps(state)
    frame = cv2.remap(echo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    frame = apply_skin(frame * DEPTH_GAIN, subject.skin)
    grain = speckle(np.random.default_rng(state.speckle_seed), (HEIGHT, WIDTH)) ** 0.6
    frame = (frame + NOISE_FLOOR) * grain
    image = probe_overlay(log_compress(frame, subject.gain_db).astype(np.uint8))

    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    if state.labelled:
        canvas_mask = place_mask(
            subject.nerve_patch, cx + state.outline_dx, cy + state.outline_dy, state.outline_scale, echo.shape
        )
        warped = cv2.remap(canvas_mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        mask = largest_component((warped >= 0.5).astype(np.uint8))
        if int(mask.sum()) < MIN_MASK_AREA:
            mask[:] = 0
    return image, mask * np.uint8(255)


def render_subject(seed: np.random.SeedSequence, n_frames: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (image, mask) for ``n_frames`` consecutive frames of one subject drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    subject = make_subject(rng)
    for state in frame_states(rng, n_frames, subject.empty_share):
        yield render_frame(subject, state)


# ---------------------------------------------------------------------------------------------------------------
# Writing a data set
# ---------------------------------------------------------------------------------------------------------------


def write_tiff(path: Path, array: np.ndarray) -> None:
    """Write an 8-bit single-channel TIFF exactly like Kaggle's: LZW, no predictor, one strip."""
    if not cv2.imwrite(str(path), array, TIFF_PARAMS):
        raise OSError(f"cv2 could not write {path}; check that the folder exists and the disk is not full")


@dataclasses.dataclass(frozen=True)
class _Job:
    """One subject to render and where its frames go (picklable, for the process pool)."""

    entropy: tuple[int, ...]
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...]


def _run_job(job: _Job) -> tuple[int, int]:
    """Render and write one subject; returns (frames written, frames labelled)."""
    labelled = 0
    frames = render_subject(np.random.SeedSequence(list(job.entropy)), len(job.image_paths))
    for (image, mask), image_path, mask_path in zip(frames, job.image_paths, job.mask_paths, strict=True):
        write_tiff(image_path, image)
        write_tiff(mask_path, mask)
        labelled += bool(mask.any())
    return len(job.image_paths), labelled


def _init_worker() -> None:
    """Each worker renders one subject at a time: one OpenCV thread per process avoids oversubscription."""
    cv2.setNumThreads(1)


def _check_empty(folder: Path, what: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise NervesegError(
            f"{what} folder {folder} is not empty; generate() never overwrites or mixes data sets: "
            f"delete or move it (e.g. `rm -r {folder}`) or choose another --out"
        )


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise NervesegError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _plan_jobs(
    seed: int, subjects: int, images_per_subject: int, test: int, train_dir: Path, test_dir: Path, masks_dir: Path
) -> list[_Job]:
    """Split the work into per-subject jobs with their own seeds and output names (Kaggle's naming).

    Test frames come from further subjects (not in training, as in the competition) and get ids 1..test in a
    seeded random order, so neighbouring ids do not reveal a subject.
    """
    jobs = [
        _Job(
            entropy=(seed, 0, subject),
            image_paths=tuple(train_dir / f"{subject}_{image}.tif" for image in range(1, images_per_subject + 1)),
            mask_paths=tuple(train_dir / f"{subject}_{image}_mask.tif" for image in range(1, images_per_subject + 1)),
        )
        for subject in range(1, subjects + 1)
    ]
    ids = np.random.default_rng(np.random.SeedSequence([seed, 2])).permutation(test) + 1
    for index, start in enumerate(range(0, test, images_per_subject)):
        chunk = [int(i) for i in ids[start : start + images_per_subject]]
        jobs.append(
            _Job(
                entropy=(seed, 1, index),
                image_paths=tuple(test_dir / f"{i}.tif" for i in chunk),
                mask_paths=tuple(masks_dir / f"{i}_mask.tif" for i in chunk),
            )
        )
    return jobs


TEST_SUBJECTS_FILE = "subjects.csv"  # beside the synthetic test masks: id,subject (for subject-level intervals)


def _write_test_subjects(jobs: list[_Job], first_subject: int, masks_dir: Path) -> None:
    """``masks_dir/subjects.csv``: which synthetic test subject (numbered after the training ones) each id shows."""
    rows = ["id,subject"]
    test_jobs = [job for job in jobs if job.entropy[1] == 1]
    for job in test_jobs:
        subject = first_subject + job.entropy[2]
        rows += [f"{path.name[: -len('_mask.tif')]},{subject}" for path in job.mask_paths]
    (masks_dir / TEST_SUBJECTS_FILE).write_text("\n".join(rows) + "\n")


def read_test_subjects(masks_dir: Path) -> dict[int, int] | None:
    """id -> subject from ``masks_dir/subjects.csv`` (written by ``generate``), or None when there is none."""
    path = Path(masks_dir) / TEST_SUBJECTS_FILE
    if not path.is_file():
        return None
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line.strip()]
        return {int(image_id): int(subject) for image_id, subject in rows}
    except ValueError as err:
        raise ValueError(f"{path} is not an id,subject table ({err}); delete it or regenerate the synthetic set") from err


def _collect(results: Iterable[tuple[int, int]], bar: tqdm) -> tuple[int, int]:
    """Sum (frames, labelled) over finished jobs, advancing the progress bar."""
    done = labelled = 0
    for n, k in results:
        done, labelled = done + n, labelled + k
        bar.update(n)
        bar.set_postfix(empty_share=f"{1 - labelled / done:.2f}")
    return done, labelled


def _execute(jobs: list[_Job], workers: int, progress: bool) -> tuple[int, int]:
    """Run the jobs (in-process or in a spawn-started pool) with a progress bar on stderr; returns (images, labelled)."""
    total = sum(len(job.image_paths) for job in jobs)
    with progress_bar(total=total, desc="synthetic", unit="img", disable=not progress, file=sys.stderr) as bar:
        if workers <= 1:
            return _collect(map(_run_job, jobs), bar)
        # spawn, not fork: the caller may have TensorFlow loaded, whose threads do not survive a fork
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            futures = [pool.submit(_run_job, job) for job in jobs]
            return _collect((future.result() for future in as_completed(futures)), bar)


def generate(
    out_dir: Path,
    subjects: int,
    images_per_subject: int,
    test: int,
    seed: int,
    *,
    test_masks_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> None:
    """Write a synthetic data set in Kaggle's layout.

    ``out_dir/train/<subject>_<image>.tif`` and ``<subject>_<image>_mask.tif`` (subjects 1..subjects, images
    1..images_per_subject), ``out_dir/test/<id>.tif`` (ids 1..test) and the test masks, which Kaggle never
    published, as ``test_masks_dir/<id>_mask.tif`` (default ``out_dir.parent / "synthetic_test_masks"``) so a
    submission can be scored locally, with ``test_masks_dir/subjects.csv`` (id,subject) for subject-level
    intervals of that score. All files: 580x420, 8-bit grayscale, LZW TIFF; masks 0/255.

    The output depends only on the arguments (not on ``workers``). Refuses to write into a non-empty folder.
    Frames are written into hidden ``.synthetic-partial-*`` folders that are renamed into place at the end, so an
    interrupted run leaves no ``train``/``test`` folder behind (a leftover partial folder may be deleted).
    ``workers`` defaults to one process per CPU for sets of 300 images or more, else in-process.
    """
    _check_count("subjects", subjects, 1)
    _check_count("images_per_subject", images_per_subject, 1)
    _check_count("test", test, 0)
    _check_count("seed", seed, 0)
    out_dir = Path(out_dir)
    masks_dir = Path(test_masks_dir) if test_masks_dir is not None else out_dir.parent / "synthetic_test_masks"
    if masks_dir.resolve() in {(out_dir / "train").resolve(), (out_dir / "test").resolve()}:
        raise NervesegError(f"test_masks_dir {masks_dir} must differ from {out_dir}/train and {out_dir}/test")
    _check_empty(out_dir / "train", "train")
    _check_empty(out_dir / "test", "test")
    _check_empty(masks_dir, "test masks")

    total = subjects * images_per_subject + test
    if workers is None:
        workers = (os.cpu_count() or 1) if total >= 300 else 1
    _check_count("workers", workers, 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-partial-", dir=out_dir))
    masks_staging = Path(tempfile.mkdtemp(prefix=".synthetic-partial-masks-", dir=masks_dir.parent))
    try:
        for folder in (staging / "train", staging / "test"):
            folder.mkdir()
        jobs = _plan_jobs(seed, subjects, images_per_subject, test, staging / "train", staging / "test", masks_staging)
        _write_test_subjects(jobs, subjects + 1, masks_staging)
        n_jobs = len(jobs)
        _execute(jobs, min(workers, n_jobs), progress)
        # rename into place: masks first, train last, so a complete train/ implies a complete set
        os.replace(masks_staging, masks_dir)
        os.replace(staging / "test", out_dir / "test")
        os.replace(staging / "train", out_dir / "train")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(masks_staging, ignore_errors=True)
