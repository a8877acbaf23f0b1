#!/usr/bin/env bash
# The reader's figures in the README: calibrate the packaged reader on the tuning halves, then
# score the held-out halves, with the reader and with the feature picker alone (--reader none).
# Needs ../shared beside the checkout; indexes and reports go to $OUT (default /tmp/qa-figures).
# About an hour on 2 cores. Usage: bash scripts/reader_figures.sh [calibrate|eval|all]
# MAX_WRONG: the share of answerable tuning questions allowed to abstain, one for every set or
# one each for the seeds, SQuAD 1.1 and SQuAD 2.0, space-separated (default "0.05 0.03 0.03",
# as shipped); CANDIDATES: the sentences the reader reads (default 4, as shipped);
# PICKERS: which pickers eval scores (default "default none"; "default" alone skips the feature picker);
# READER: the reader folder to calibrate (default qa/reader, the packaged one; put it in PICKERS to eval it);
# REACH: how far down the candidates it reads, in logits (`qa calibrate --reach`: auto, all or a number).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
qa=.venv/bin/qa
OUT=${OUT:-/tmp/qa-figures}
SQUAD=../shared/beir/squad-v1.1-dev
TUNE='^([0-9]|1[0-9]|2[0-3])_'
HELD='^(2[4-9]|3[0-9]|4[0-7])_'
mkdir -p "$OUT"
[ -d "$OUT/seeds" ] || $qa build --index "$OUT/seeds" --quiet
[ -d "$OUT/squad" ] || $qa build "$SQUAD/corpus.jsonl" --index "$OUT/squad" --quiet
if [ ! -d "$OUT/squad2" ]; then
  .venv/bin/python -c "from pathlib import Path; from qa.squad import write_squad2; print(write_squad2(Path('$OUT/squad2-data')))"
  $qa build "$OUT/squad2-data/corpus.jsonl" --index "$OUT/squad2" --quiet
fi

if [ "${1:-all}" != eval ]; then
  # Tuning only: the seeds' first 72 questions (not the nm* ones), SQuAD 1.1 dev articles 0-23,
  # the odd non-held-out SQuAD 2.0 articles asked of their own paragraph, and off-topic pairs.
  $qa calibrate --reader "${READER:-qa/reader}" --candidates "${CANDIDATES:-4}" --reach "${REACH:-auto}" --max-wrong-abstain ${MAX_WRONG:-0.05 0.03 0.03} --exclude-id '^nm' --limit 1000 \
    --on "$OUT/seeds" tests/questions.jsonl \
    --on "$OUT/squad" "$SQUAD/questions.jsonl" "$TUNE" \
    --on "$OUT/squad2" "$OUT/squad2-data/questions-tune.jsonl" \
    --offtopic "$OUT/seeds" "$SQUAD/questions.jsonl" "$TUNE" \
    --offtopic "$OUT/squad" tests/questions.jsonl
fi

if [ "${1:-all}" != calibrate ]; then
  for reader in ${PICKERS:-default none}; do
    name=$(basename "$reader")
    $qa eval tests/questions.jsonl --index "$OUT/seeds" --retriever all --reader $reader --quiet \
      --run-out "$OUT/seeds-$name.jsonl" | tee "$OUT/seeds-$name.txt"
    $qa eval "$SQUAD/questions.jsonl" --index "$OUT/squad" --filter-doc "$HELD" --reader $reader \
      --quiet --run-out "$OUT/squad-$name.jsonl" | tee "$OUT/squad-$name.txt"
    $qa eval "$OUT/squad2-data/questions-heldout.jsonl" --index "$OUT/squad2" --given-doc \
      --sample 2000 --reader $reader --quiet | tee "$OUT/squad2-given-$name.txt"
    $qa eval "$OUT/squad2-data/questions-heldout.jsonl" --index "$OUT/squad2" \
      --sample 1000 --reader $reader --quiet | tee "$OUT/squad2-open-$name.txt"
  done
fi
