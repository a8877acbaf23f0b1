#!/usr/bin/env bash
# Rebuild the shipped reader (qa/reader/) from the base weights and ../shared/qa-train: three runs
# of `qa train-reader` (about 40 minutes each on 2 cores), each going on from the last, the mean
# of the last two runs' weights, a fourth run from the mean with antonym and negation negatives,
# then its calibration on the tuning halves (scripts/reader_figures.sh calibrate, about 5
# minutes). Each run keeps checkpoints in its folder; run this again after an interruption and
# the cut-short run resumes.
# Then copy $OUT/reader-run4/{reader.json,reader.safetensors,calibration.json} into qa/reader/.
# Usage: bash scripts/train_reader.sh   (OUT: where the runs go, default build)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
OUT=${OUT:-build}
# 1. From the base weights, with the command's defaults: 6 layers, 72,000 pairs, seed 13, lr 6e-5,
#    half the answerable questions also giving a swapped-name negative.
[ -f "$OUT/reader-run1/reader.safetensors" ] || .venv/bin/qa train-reader --out "$OUT/reader-run1" --report-limit 0
# 2. Going on from it: 72,000 more pairs of other questions at a lower rate (prints the held-out
#    reading figures at the end).
[ -f "$OUT/reader-run2/reader.safetensors" ] || \
  .venv/bin/qa train-reader --init "$OUT/reader-run1" --seed 14 --lr 4e-5 --out "$OUT/reader-run2"
# 3. Going on from run 2: 72,000 more pairs at a lower rate again.
[ -f "$OUT/reader-run3/reader.safetensors" ] || \
  .venv/bin/qa train-reader --init "$OUT/reader-run2" --seed 15 --lr 3e-5 --out "$OUT/reader-run3"
# 4. The mean of runs 2 and 3 (chosen on the tuning halves over run 3 alone).
[ -f "$OUT/reader-avg/reader.safetensors" ] || \
  .venv/bin/qa train-reader --average "$OUT/reader-run2" "$OUT/reader-run3" --out "$OUT/reader-avg" \
    --report-limit 0
# 5. Going on from the mean: 72,000 more pairs, every answerable question that allows it also
#    giving its answer sentence against the question turned into its opposite (--contrast).
[ -f "$OUT/reader-run4/reader.safetensors" ] || \
  .venv/bin/qa train-reader --init "$OUT/reader-avg" --seed 16 --lr 3e-5 --contrast 1 \
    --out "$OUT/reader-run4"
# 6. Calibrated as shipped: 4 sentences read, at most 5% / 3% / 3% of the tuning answerable
#    questions abstaining.
READER="$OUT/reader-run4" bash scripts/reader_figures.sh calibrate
