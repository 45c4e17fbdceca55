#!/usr/bin/env bash
# The leave-one-out report on the bundled MovieLens latest-small: docs/eval/movielens-loo.md (+ .html).
#
#   make report-loo                      (or: bash eval/reports/movielens_loo.sh)
#
# Every arm that exists, all 610 users of the 5-core split, paired CIs against the fused retrieval order, and
# LlamaRec's published rows (labelled as published, not re-run). Retrieval-only arms: no LLM engine is started.
# An interrupted run continues where it stopped (--resume); after changing the arms, give another OUT.
# Environment: PY (python with recagent importable, default .venv/bin/python), OUT (run folder), DOCS (where the
# report is copied, default docs/eval), DATA (the dataset folder), EXTRA (more `eval run` options, e.g. --users 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-eval-out/movielens-loo}
DOCS=${DOCS:-docs/eval}
DATA=${DATA:-data/movielens-latest-small}

# "X alone" arms turn every other source off: when a source lands, add `,fusion.NAME=0` to ONLY and its line below
# (a later key wins: "NAME:$ONLY,fusion.NAME=1" keeps NAME on).
ONLY="strategy=retrieval,explain=none,fusion.semantic=0,fusion.item2item=0,fusion.collab=0,fusion.popularity=0"
ARMS=(
  --baseline popularity
  --baseline itemknn
  --baseline embedding                      # semantic + item-to-item sources, fused order
  --baseline retrieval                      # today's fusion (the reference arm)
  # one line per learned source or ranker once it exists, e.g.:
  # --variant "transition:$ONLY,fusion.transition=1"
  # --variant "ease:$ONLY,fusion.ease=1"
  # --variant "sequential:$ONLY,fusion.sequential=1"
  # --variant "rrf:strategy=retrieval,explain=none"          (the new default fusion of every source)
  # --variant "learned:strategy=learned,explain=none"         (the learned ranker over the fused candidates)
)

started=$(date +%s)
# shellcheck disable=SC2086
"$PY" -m recagent eval run "$DATA" --split loo "${ARMS[@]}" --reference retrieval \
  --published eval/reports/llamarec-ml-latest-small.json --out "$OUT" --resume ${EXTRA:-}
mkdir -p "$DOCS"
{
  cat "$OUT/report.md"
  echo
  echo "Produced by \`bash eval/reports/movielens_loo.sh\` (\`make report-loo\`) in $(( $(date +%s) - started )) s" \
       "(this invocation) on $(nproc) CPU cores; \"retrieval recall\" is the share of test items among an arm's fused candidates" \
       "(the fused 20 by default)."
} > "$DOCS/movielens-loo.md"
cp "$OUT/report.html" "$DOCS/movielens-loo.html"
echo "written: $DOCS/movielens-loo.md, $DOCS/movielens-loo.html (run folder: $OUT)"
