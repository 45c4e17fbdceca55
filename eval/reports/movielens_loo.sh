#!/usr/bin/env bash
# The leave-one-out report on the bundled MovieLens latest-small: docs/eval/movielens-loo.md (+ .html).
#
#   make report-loo                      (or: bash eval/reports/movielens_loo.sh)
#   make report-temporal                 (or: SPLIT=temporal LLM=0 bash eval/reports/movielens_loo.sh)
#
# SPLIT (default loo) is the evaluator's split: with SPLIT=temporal (leave the last positive out, rating >= 4 after
# >= 5 earlier ratings) the report is docs/eval/movielens-temporal.md, the sequential model learns from that split's
# train log (`train sequential --split temporal`), and no published rows are shown (none exist for that split).
#
# Every arm, all 610 users of the 5-core split, paired CIs against the default fused retrieval order, and LlamaRec's
# published rows (labelled as published, not re-run). Only the `learned-llm` and `default` arms start the LLM engine
# (LLM=0 skips both, and the LLM-feature ranker's training).
# An interrupted run continues where it stopped (--resume); after changing the arms, give another OUT.
# Environment: PY (python with recagent importable, default .venv/bin/python), OUT (run folder), DOCS (where the
# report is copied, default docs/eval), DATA (the dataset folder), EXTRA (more `eval run` options, e.g. --users 50),
# LLM=0 (no LLM arm), LTR_ARMS=0 (no learned ranker: neither trained nor evaluated).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SPLIT=${SPLIT:-loo}
OUT=${OUT:-eval-out/movielens-$SPLIT}
DOCS=${DOCS:-docs/eval}
DATA=${DATA:-data/movielens-latest-small}

# The learned models are trained by this script on the split's own parts (skipped when OUT already holds them):
# the sequential model on the train part (early stopping on the validation items), the learned ranker on the
# validation targets; every pipeline arm then sees the sequential model (RECAGENT_SEQUENTIAL_MODEL) unless it turns
# the source off. With LLM=1 a second ranker ($OUT/ltr-llm) learns the option-logit LLM's score as one more feature
# (`--llm-strategy options`, on the fused 20 that it serves: one 20-option prompt per validation user whose target is
# among them; its LLM answers are cached in that folder, so an interrupted training resumes).
SEQ="$OUT/sequential"
LTR="$OUT/ltr"
LTR_LLM="$OUT/ltr-llm"
mkdir -p "$OUT"
t0=$(date +%s)
SEQ_SPLIT=()
PUBLISHED=()
if [ "$SPLIT" = loo ]; then
  PUBLISHED=(--published eval/reports/llamarec-ml-latest-small.json)
else
  SEQ_SPLIT=(--split "$SPLIT")
fi
[ -f "$SEQ/manifest.json" ] || "$PY" -m recagent train sequential --catalog "$DATA" --interactions "$DATA/ratings.csv" \
  --out "$SEQ" --epochs 30 --threads 1 --force "${SEQ_SPLIT[@]}"
t1=$(date +%s)
export RECAGENT_SEQUENTIAL_MODEL="$SEQ"
[ "${LTR_ARMS:-1}" = 0 ] || [ -f "$LTR/manifest.json" ] || "$PY" -m recagent train ranker-ltr --catalog "$DATA" --interactions "$DATA" \
  --split "$SPLIT" --out "$LTR" --force
t2=$(date +%s)
[ "${LTR_ARMS:-1}" = 0 ] || [ "${LLM:-1}" = 0 ] || [ -f "$LTR_LLM/manifest.json" ] || "$PY" -m recagent train ranker-ltr \
  --catalog "$DATA" --interactions "$DATA" --split "$SPLIT" --out "$LTR_LLM" --candidates 20 --llm-strategy options --force
t3=$(date +%s)

# "X alone" arms turn every other source off (a later key wins: "NAME:$ONLY,fusion.NAME=1" keeps NAME on).
ONLY="strategy=retrieval,explain=none,fusion.semantic=0,fusion.item2item=0,fusion.collab=0,fusion.popularity=0"
ONLY="$ONLY,fusion.transition=0,fusion.ease=0,fusion.sequential=0"
BEFORE="strategy=retrieval,explain=none,fusion.transition=0,fusion.ease=0,fusion.sequential=0,fusion.collab=1"
BEFORE="$BEFORE,fusion.popularity=0.5"
ARMS=(
  --baseline popularity
  --baseline itemknn
  --baseline ease                           # EASE alone over the whole catalog (train log)
  --baseline transition                     # the transition counts alone over the whole catalog
  --baseline embedding                      # semantic + item-to-item sources, fused order
  --baseline retrieval                      # the default fusion of every source (the reference arm)
  --variant "fusion-before:$BEFORE"         # the fusion before the log-learned sources (semantic, item2item, collab, popularity)
  --variant "sequential:$ONLY,fusion.sequential=1"
  --variant "rrf-no-seq:strategy=retrieval,explain=none,fusion.sequential=0"
)
if [ "${LTR_ARMS:-1}" = 1 ]; then                # LTR_ARMS=0: no learned ranker (neither trained nor evaluated)
  ARMS+=(--variant "learned:strategy=learned,explain=none,ltr_model=$LTR"
         --variant "learned100:strategy=learned,explain=none,candidates=100,ltr_model=$LTR")
fi
if [ "${LLM:-1}" = 1 ]; then
  # the learned ranker with the option-logit LLM's score as a feature; before `default`, whose prompts are the same
  # (so this arm pays the LLM time and `default` is then answered from the run's LLM cache)
  if [ "${LTR_ARMS:-1}" = 1 ]; then
    ARMS+=(--variant "learned-llm:strategy=learned,explain=none,ltr_model=$LTR_LLM,ltr_llm_strategy=options")
  fi
  ARMS+=(--variant "default:explain=none")   # the default pipeline: option-logit LLM blend (weight 0.2) on the fused 20
fi

started=$t0
# shellcheck disable=SC2086
"$PY" -m recagent eval run "$DATA" --split "$SPLIT" "${ARMS[@]}" --reference retrieval \
  "${PUBLISHED[@]}" --out "$OUT" --resume ${EXTRA:-}
mkdir -p "$DOCS"
{
  cat "$OUT/report.md"
  echo
  echo "Produced by \`SPLIT=$SPLIT LLM=${LLM:-1} LTR_ARMS=${LTR_ARMS:-1} bash eval/reports/movielens_loo.sh\` (\`make report-$SPLIT\`) in $(( $(date +%s) - started )) s" \
       "(this invocation) on $(nproc) CPU cores; \"retrieval recall\" is the share of test items among an arm's fused candidates" \
       "(the fused 20 by default). Training inside it: sequential model $(( t1 - t0 )) s, learned ranker $(( t2 - t1 )) s," \
       "learned ranker with the LLM feature $(( t3 - t2 )) s (0 s: reused from \`$OUT\`)."
} > "$DOCS/movielens-$SPLIT.md"
cp "$OUT/report.html" "$DOCS/movielens-$SPLIT.html"
echo "written: $DOCS/movielens-$SPLIT.md, $DOCS/movielens-$SPLIT.html (run folder: $OUT)"
