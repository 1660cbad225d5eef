#!/usr/bin/env bash
# Identical numbers before and after a refactor: tiny runs of every task and model family, reduced to one digest.
#
#   bash scripts/identical_numbers.sh OUT          # ~4 min on 2 cores; OUT must not exist
#   diff OUT_before/digest.txt OUT_after/digest.txt   # empty = the refactor changed no number
#
# It runs the commands a user runs (make_synthetic, cv_train, submit, compare) on tiny synthetic data: the nerve
# U-Net into a LocalStore folder (--run-dir) and into an SQLite MLflow store (two seeds, then compare.py), the
# ISBI U-Net and the patch CNN into LocalStore folders, each followed by its submission. The digest lists the
# SHA-256 of every weight, OOF, post-processing and submission file and every numeric metric of the MLflow runs
# (times and timestamps left out), so any changed number, file or name shows in the diff. Make both digests on one
# machine: another CPU generation trains other weights from the same code (provenance.cpu_description names it).
set -euo pipefail
out=${1:?usage: scripts/identical_numbers.sh OUT (a new folder)}
[ -e "$out" ] && { echo "identical_numbers.sh: $out exists; give a new folder" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PY:-$root/.venv/bin/python}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$out"
export TF_CPP_MIN_LOG_LEVEL=3 MLFLOW_TRACKING_URI="sqlite:///$out/mlflow.db" MLFLOW_EXPERIMENT_NAME=probe
run() { "$py" "$root/src/$1" "${@:2}" --no-progress > "$out/log_${1%.py}_$RANDOM.txt" 2>&1 || { echo "failed: $*" >&2; exit 1; }; }

cat > nerve.yaml <<'EOF'
height: 32
width: 40
depth: 3
base_filters: 4
presence_head: true
batch_size: 8
epochs: 2
folds: 3
seed: 1
EOF
cat > isbi_unet.yaml <<'EOF'
task: isbi2012
height: 64
width: 64
depth: 3
base_filters: 4
crop_size: 32
batch_size: 4
epochs: 2
steps_per_epoch: 3
folds: 3
seed: 1
EOF
cat > isbi_patch.yaml <<'EOF'
task: isbi2012
model: patch_cnn
height: 64
width: 64
window: 25
patch_filters: 4
dense_units: 8
batch_size: 16
epochs: 1
steps_per_epoch: 3
folds: 3
seed: 1
tta: false
EOF

"$py" "$root/src/make_synthetic.py" --out raw --test-masks test_masks --subjects 6 --images-per-subject 4 --test 12 \
    --seed 3 --workers 1 --no-progress > /dev/null
"$py" "$root/src/make_synthetic_em.py" --out isbi --train 6 --test 3 --size 64 --seed 3 --no-progress > /dev/null
paths=(--raw-dir raw --cache-dir cache --folds-dir folds)
run cv_train.py --config nerve.yaml "${paths[@]}" --test-masks test_masks --run-dir nerve_local
run submit.py --run-dir nerve_local --raw-dir raw --cache-dir cache --out-dir sub --out-name nerve_local.csv \
    --test-masks test_masks
run cv_train.py --config nerve.yaml "${paths[@]}" --test-masks test_masks
run cv_train.py --config nerve.yaml "${paths[@]}" --test-masks test_masks --seed 2
run submit.py --task nerve --raw-dir raw --cache-dir cache --out-dir sub --out-name nerve_mlflow.csv --test-masks test_masks
isbi_paths=(--raw-dir isbi --cache-dir cache --folds-dir folds)
run cv_train.py --config isbi_unet.yaml "${isbi_paths[@]}" --run-dir isbi_unet
run cv_train.py --config isbi_patch.yaml "${isbi_paths[@]}" --run-dir isbi_patch
for r in isbi_unet isbi_patch; do
    run submit.py --run-dir $r --raw-dir isbi --cache-dir cache --out-dir sub --out-name $r.tif --no-tta
done
"$py" "$root/src/compare.py" isbi_unet isbi_patch --no-track --resamples 500 > compare.txt 2> /dev/null

"$py" - "$out" > digest.txt <<'EOF'
"""Every file's hash and every MLflow run's numeric metrics, in a stable order."""
import hashlib
import sys
from pathlib import Path

import mlflow

out = Path(sys.argv[1])
SKIP_SUFFIX = (".txt", ".log", ".png", ".html", ".md", ".json", ".yaml", ".db", ".lock")
for path in sorted(p for p in out.rglob("*") if p.is_file()):
    rel = path.relative_to(out)
    # the cache's names and keys hold the raw files' mtimes; MLflow's paths hold run ids
    if rel.parts[0] in ("cache", "mlartifacts", "mlruns") or path.suffix in SKIP_SUFFIX or rel.name == "log":
        continue
    print(rel, hashlib.sha256(path.read_bytes()).hexdigest()[:16])
for name in ("postprocessing.json",):
    for path in sorted(p for p in out.rglob(name) if "mlartifacts" not in p.parts):  # MLflow's: run ids in paths
        kept = "".join(line for line in path.read_text().splitlines(True) if '"seconds"' not in line)
        print(path.relative_to(out), hashlib.sha256(kept.encode()).hexdigest()[:16])
for path in sorted(out.rglob("metrics.json")):
    print(path.relative_to(out), " ".join(sorted(l.strip() for l in path.read_text().splitlines() if "second" not in l)))
print("compare.py:", (out / "compare.txt").read_text())
runs = mlflow.search_runs(experiment_names=["probe"], output_format="list", order_by=["attributes.start_time"])
for i, run in enumerate(runs):
    numbers = {k: v for k, v in run.data.metrics.items() if not any(w in k for w in ("second", "minute", "time"))}
    print(f"mlflow run {i} {run.info.run_name}:", " ".join(f"{k}={v:.10g}" for k, v in sorted(numbers.items())))
EOF
echo "digest: $out/digest.txt ($(wc -l < digest.txt) lines)"
