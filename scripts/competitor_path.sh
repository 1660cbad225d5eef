#!/usr/bin/env bash
# The competitor's path, run as a user runs it in a fresh clone, with stand-ins for what cannot be reached here:
#   make demo -> Kaggle's zip (a synthetic stand-in) through get_data.py into data/raw -> cv_train.py (quick.yaml)
#   -> submit.py --list and submit.py (picks the run trained on data/raw, not the demo's) -> --kaggle (a stand-in
#   `kaggle` client first on PATH, which records what it is sent) -> leaderboard.py (typed stand-in scores) -> plot.
# Needs an empty data/raw. Usage: bash scripts/competitor_path.sh   (about 10 minutes on 2 cores, the demo included)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORK=$(mktemp -d -t competitor-XXXX)
step() { local start=$SECONDS; printf '\n$ %s\n' "$*"; "$@"; echo "($((SECONDS - start)) s)"; }

step make demo

echo; echo "# a stand-in for Kaggle's ultrasound-nerve-segmentation.zip: 12 synthetic subjects, Kaggle's layout"
$PY src/make_synthetic.py --out "$WORK/zip" --test-masks "$WORK/masks" --subjects 12 --images-per-subject 20 \
    --test 60 --seed 7 --no-progress
(cd "$WORK/zip" && "$OLDPWD/$PY" -m zipfile -c ../ultrasound-nerve-segmentation.zip train test)

step $PY src/get_data.py --zip "$WORK/ultrasound-nerve-segmentation.zip"
step $PY src/prepare_data.py --no-progress
step $PY src/cv_train.py --config experiments/quick.yaml
step $PY src/submit.py --list
step env MLFLOW_EXPERIMENT_NAME=nerveseg-demo $PY src/submit.py --list

echo; echo "# the stand-in Kaggle client: records its arguments, answers as the real one does"
mkdir -p "$WORK/bin"
cat > "$WORK/bin/kaggle" <<STANDIN
#!/bin/sh
printf '%s\n' "\$*" >> "$WORK/kaggle_calls.txt"
echo "Successfully submitted to Ultrasound Nerve Segmentation"
STANDIN
chmod +x "$WORK/bin/kaggle"
export PATH="$WORK/bin:$PATH" KAGGLE_USERNAME=stand-in KAGGLE_KEY=stand-in

step $PY src/submit.py --kaggle --no-progress
echo; echo "# what the client was sent:"; cat "$WORK/kaggle_calls.txt"
csv=$(ls -t submissions/*.csv | head -n 1)
echo; echo "# stand-in leaderboard scores, typed in as a user types Kaggle's (not real scores)"
step $PY src/leaderboard.py --csv "$csv" --public 0.60 --private 0.62
rm -rf "$WORK"
