#!/usr/bin/env bash
# A second real log through a column mapping alone: MovieLens latest-small's tags.csv (tagging, no ratings) with
# eval/reports/movielens-tags.toml, `--split loo`: docs/eval/movielens-tags.md. No published figures exist for it.
#
#   make report-tags                     (or: bash eval/reports/movielens_tags.sh)
#
# Two runs: --kcore 2 (the most users a leave-one-out split keeps: 27) without the sequential model, and --kcore 3
# (the sequential model's floor: a user needs a train item besides validation and test) with it.
# Environment: PY (python with recagent importable), OUT (run folders), DATA (the MovieLens folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-eval-out/movielens-tags}
DATA=${DATA:-data/movielens-latest-small}
LOG=(--interactions "$DATA/tags.csv" --interactions-mapping eval/reports/movielens-tags.toml)
ARMS=(--baseline popularity --baseline itemknn --baseline ease --baseline transition --baseline embedding
      --baseline retrieval)
mkdir -p "$OUT"
"$PY" -m recagent eval run "$DATA" "${LOG[@]}" --split loo --kcore 2 "${ARMS[@]}" --reference retrieval \
  --out "$OUT/kcore2" --resume
[ -f "$OUT/sequential/manifest.json" ] || "$PY" -m recagent train sequential --catalog "$DATA" "${LOG[@]}" \
  --min-count 3 --out "$OUT/sequential" --epochs 50 --threads 1 --force
RECAGENT_SEQUENTIAL_MODEL="$OUT/sequential" "$PY" -m recagent eval run "$DATA" "${LOG[@]}" --split loo --kcore 3 \
  "${ARMS[@]}" --variant "sequential:strategy=retrieval,explain=none,fusion.semantic=0,fusion.item2item=0,fusion.collab=0,fusion.popularity=0,fusion.transition=0,fusion.ease=0,fusion.sequential=1" \
  --reference retrieval --out "$OUT/kcore3" --resume
echo "reports: $OUT/kcore2/report.md, $OUT/kcore3/report.md"
