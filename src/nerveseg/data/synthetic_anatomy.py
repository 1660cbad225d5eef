"""Anatomy of the synthetic ultrasound: the measured targets, small random fields, tissue layers, muscles, fascia
and vessels.

Split out of ``synthetic`` (which explains the whole model); every function is pure, seeded by the generator passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH

if TYPE_CHECKING:
    from nerveseg.data.synthetic_nerve import NerveGeometry

HEIGHT, WIDTH = ORIG_HEIGHT, ORIG_WIDTH
MARGIN = 56  # canvas margin, so probe motion never reveals the canvas edge
CANVAS_H, CANVAS_W = HEIGHT + 2 * MARGIN, WIDTH + 2 * MARGIN
SKIN_ROWS = 44  # skin and subcutis lie under the probe: they move with it, not with the anatomy


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


def ellipse_field(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle_deg: float) -> np.ndarray:
    """Normalised elliptic radius (1 on the ellipse) over a grid of ``shape``; cheap building block for blobs."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def soft_step(r: np.ndarray, edge: float) -> np.ndarray:
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
        inside = soft_step(ellipse_field(shape, cx, cy, rx, ry, rng.uniform(-25, 25)), 0.15)
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
    r = ellipse_field(local, vessel.cx - x0, vessel.cy - y0, vessel.rx * scale, vessel.ry * scale, vessel.angle)
    lumen = soft_step(r, 0.3)
    wall = np.exp(-(((r - 1.0) / 0.09) ** 2)).astype(np.float32)
    below = np.arange(local[0], dtype=np.float32)[:, None] + y0 > vessel.cy
    enhancement = 1.0 + 0.25 * below * np.exp(-(((r - 1.6) / 0.6) ** 2)) * (1 - lumen)
    patch = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = patch * (1 - 0.8 * lumen) * enhancement + 2.0 * wall
    return out
