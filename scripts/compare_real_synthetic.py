"""Side-by-side montage of real Kaggle frames and synthetic ones, mask outlines in red: docs/real_vs_synthetic.png.

    .venv/bin/python scripts/compare_real_synthetic.py [--real ../shared/real_sample] [--seed 0] [--out PATH]

Row 1: real training frames read at run time from the shared sample beside the repository (never copied into it;
only this montage is kept, for the README). Rows 2 and 3: synthetic frames rendered in memory by
nerveseg.data.synthetic -- three labelled and one empty, like the real row -- in the "realistic" style (tests,
benchmarks) and the "clear" style (make demo): the same subjects, frames and masks, only the nerve's look differs.
Row 4: two of those frames in each style as the model sees them (64x80, enlarged), where the difference matters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cv2
import numpy as np

from nerveseg.data.synthetic import STYLES, render_subject
from nerveseg.io_utils import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
REAL_DEFAULT = ROOT.parent / "shared" / "real_sample"
REAL_IDS = ("1_1", "1_3", "10_100", "1_5")  # three labelled frames and one empty one (1_5)
SCALE = 0.6  # tile size 348 x 252


def outlined(image: np.ndarray, mask: np.ndarray, title: str) -> np.ndarray:
    """A scaled BGR tile of ``image`` with the mask outline in red and a caption."""
    tile = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, (0, 0, 255), 2, cv2.LINE_AA)
    tile = cv2.resize(tile, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    (w, h), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(tile, (0, tile.shape[0] - h - 10), (w + 10, tile.shape[0]), (0, 0, 0), -1)
    cv2.putText(tile, title, (5, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def real_tiles(real_dir: Path) -> list[np.ndarray]:
    tiles = []
    for frame_id in REAL_IDS:
        image = cv2.imread(str(real_dir / "train" / f"{frame_id}.tif"), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(real_dir / "train" / f"{frame_id}_mask.tif"), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            raise SystemExit(f"error: cannot read real frame {frame_id} under {real_dir / 'train'}; pass --real")
        tiles.append(outlined(image, mask, f"real {frame_id}" + ("" if mask.any() else " (empty mask)")))
    return tiles


def synthetic_frames(seed: int, style: str) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(image, mask, title): the first three labelled frames from three different subjects, then one empty frame."""
    labelled: list[tuple[np.ndarray, np.ndarray, str]] = []
    empty: list[tuple[np.ndarray, np.ndarray, str]] = []
    for subject, child in enumerate(np.random.SeedSequence(seed).spawn(12), start=1):
        for index, (image, mask) in enumerate(render_subject(child, 12, STYLES[style]), start=1):
            title = f"{style} {subject}_{index}"
            if mask.any() and len(labelled) < 3:
                labelled.append((image, mask, title))
                break
            if not mask.any() and not empty and len(labelled) == 3:
                empty.append((image, mask, title + " (empty mask)"))
                break
        if len(labelled) == 3 and empty:
            return labelled + empty
    raise SystemExit(f"error: seed {seed} gave too few labelled/empty frames; try another --seed")


def model_view(image: np.ndarray, mask: np.ndarray, title: str) -> np.ndarray:
    """``image`` at the model's 64x80, enlarged back to the frame's size, outlined like the other tiles."""
    small = cv2.resize(image, (80, 64), interpolation=cv2.INTER_AREA)
    return outlined(cv2.resize(small, image.shape[::-1], interpolation=cv2.INTER_NEAREST), mask, title + " at 64x80")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=REAL_DEFAULT, help="the shared real sample (outside the repo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "real_vs_synthetic.png")
    args = parser.parse_args(argv)
    if not (args.real / "train").is_dir():
        print(f"error: real sample not found at {args.real / 'train'}; pass --real DIR", file=sys.stderr)
        return 2
    styles = {style: synthetic_frames(args.seed, style) for style in ("realistic", "clear")}
    rows = [real_tiles(args.real)] + [[outlined(*frame) for frame in frames] for frames in styles.values()]
    rows.append([model_view(*frames[i]) for frames in styles.values() for i in (0, 1)])
    montage = np.vstack([np.hstack(row) for row in rows])
    ok, encoded = cv2.imencode(".png", montage)
    if not ok:
        raise SystemExit("error: PNG encoding failed")
    atomic_write_bytes(args.out, encoded.tobytes())
    print(f"wrote {args.out} ({montage.shape[1]}x{montage.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
