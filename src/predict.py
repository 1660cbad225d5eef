"""Segment new images with a registered model: ``python src/predict.py INPUT... --model URI --out DIR``.

INPUT is image files or folders of them (TIFF, PNG, JPEG; grayscale or RGB; any size: resized to the
model's input, masks returned at the image's own size; a folder's ``*_mask.*`` files are left out).
Writes ``<stem>_mask.png``, ``<stem>_overlay.png`` (the outline on the image) and ``predictions.csv``
(file, present, probability, area, RLE) into DIR. A bad file is named on one line and skipped, the others
are still written, and the exit status is then 2. A file named twice is predicted once. Outputs are never
overwritten; a run that stopped half-way is finished by running the same command again (the files it wrote
are kept when identical). DIR may not lie in the raw data folder. ``--model`` also takes a model folder
(``register.py --run-dir RUN_DIR --out MODEL_DIR``), which needs no MLflow tracking store.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nerveseg import names
from nerveseg.cli import USAGE_ERROR, ArgumentParser, add_verbose, one_line_errors
from nerveseg.logs import quiet_tensorflow

CHAMPION = f"models:/{names.REGISTERED_MODEL}@{names.CHAMPION_ALIAS}"


@one_line_errors(interrupted="interrupted: what was written is kept; run the same command again to finish")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    parser.add_argument(
        "--model", default=CHAMPION, help=f"model URI ({CHAMPION}) or a model folder (register.py --out)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the masks, overlays and predictions.csv")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call (32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose(parser)
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)
    from nerveseg.run.predict import PREDICTIONS_FILE, predict_files
    from nerveseg.track.registry import load_model

    report = predict_files(
        args.inputs, args.model, args.out, load_model=load_model, batch_size=args.batch_size,
        progress=not args.no_progress,
    )  # fmt: skip
    found = sum(row["present"] for row in report.rows)
    print(f"{len(report.rows)} images segmented ({found} with a nerve) into {report.out_dir}")
    if report.rows:
        print(f"wrote {report.out_dir / PREDICTIONS_FILE}, <stem>_mask.png and <stem>_overlay.png per image")
    if report.masks_left_out:
        print(f"left out {report.masks_left_out} *_mask files of the input folders")
    if report.duplicates:
        print(f"note: {report.duplicates} input(s) named more than once, predicted once")
    if report.kept:
        print(f"kept {report.kept} identical output file(s) an earlier run had written")
    if report.skipped:  # each was named on its own error line as it was skipped
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
