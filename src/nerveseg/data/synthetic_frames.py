"""Synthetic subjects and frames: skin and display, the slowly drifting per-frame state, and rendering a frame.

A subject is an anatomy canvas plus its nerve; each frame warps that canvas by the frame's state, adds skin and
speckle, and log-compresses to 8 bits like a scanner's display (see ``synthetic`` for the whole model).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import cv2
import numpy as np

from nerveseg.data.synthetic_anatomy import (
    ANNOTATOR_NOISE,
    CANVAS_H,
    CANVAS_W,
    CONTRADICTORY_PAIR_RATE,
    DISPLAY_GAMMA,
    DISPLAY_OFFSET,
    DYNAMIC_RANGE_DB,
    EMPTY_SHARE_BETA,
    EMPTY_SHARE_RANGE,
    HEIGHT,
    MARGIN,
    NOISE_FLOOR,
    SKIN_ROWS,
    WIDTH,
    Vessel,
    fascia_bands,
    layer_boundaries,
    muscle_bellies,
    paint_vessel,
    place_vessels,
    smooth_noise,
    speckle,
    tissue_layers,
)
from nerveseg.data.synthetic_nerve import (
    NerveGeometry,
    NervePatch,
    blend_nerve,
    make_nerve_patch,
    nerve_distractor,
    place_mask,
    sample_nerve_geometry,
)
from nerveseg.evaluate.postprocess import largest_component

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
# Styles: how hard the nerve is to see
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Style:
    """How visible the nerve is and how consistently it is labelled; the random draws are the same in every style.

    ``realistic`` (the default) is as hard as the real scans at 64x80: the nerve is told mostly by its place, and
    labels near the visibility cut-off are a coin flip. ``clear`` is the demo's: the nerve has a dark core and a
    wide bright rim (``synthetic_nerve.clear_look``), the annotator is consistent and a frame's visibility follows
    its label closely, so a thin U-Net learns it within a few CPU minutes.
    """

    name: str
    clear_nerve: bool
    annotator_noise: float  # sd of the label's disagreement with what the image shows (latent scale, sd 1)
    visibility_edge: float  # width of the visibility ramp around the annotator's cut-off (latent scale)


STYLES = {
    "realistic": Style("realistic", clear_nerve=False, annotator_noise=ANNOTATOR_NOISE, visibility_edge=0.35),
    "clear": Style("clear", clear_nerve=True, annotator_noise=0.1, visibility_edge=0.12),
}
REALISTIC = STYLES["realistic"]


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


def make_subject(rng: np.random.Generator, style: Style = REALISTIC) -> Subject:
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
        nerve_patch=make_nerve_patch(rng, nerve, clear=style.clear_nerve),
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


def frame_states(rng: np.random.Generator, n: int, empty_share: float, style: Style = REALISTIC) -> list[FrameState]:
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
    shown = latent + rng.normal(0.0, style.annotator_noise, size=n)
    strength = 1.0 / (1.0 + np.exp(-(shown - cut) / style.visibility_edge))
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


def render_subject(
    seed: np.random.SeedSequence, n_frames: int, style: Style = REALISTIC
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (image, mask) for ``n_frames`` consecutive frames of one subject drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    subject = make_subject(rng, style)
    for state in frame_states(rng, n_frames, subject.empty_share, style):
        yield render_frame(subject, state)
