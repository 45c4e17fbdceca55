#!/usr/bin/env bash
# The justification report: docs/eval/justifications.md (+ .html).
#
#   make report-text                     (or: bash eval/reports/justifications.sh)
#
# What the LLM writes for each recommended item, on the bundled MovieLens (USERS users, temporal split) and on ReDial
# dev (TURNS turns; the request is the conversation): grounding rate, user-link rate, distinctness, length, fallbacks
# by reason and latency, with 95% CIs and paired differences, plus 20 sample justifications per dataset printed
# verbatim (drawn with the seed, good and bad alike). Definitions: eval/text_metrics.py, docs/evaluation.md.
#
# Arms: `chat` (prompt_format=chat: the instruction prompt, as before the few-shot layout) and `fewshot`
# (prompt_format=fewshot, what `auto` picks for a base model); `today` alone on a checkout without prompt_format. Every arm keeps the fused retrieval order
# (strategy=retrieval), so all arms justify the same K items of the same cases and the comparisons are paired.
# An interrupted run continues where it stopped (--resume); after changing the arms, give another OUT.
# Environment: PY (python with recagent importable, default .venv/bin/python), OUT (run folders), DOCS (where the
# report goes, default docs/eval), DATA (MovieLens folder), REDIAL (ReDial folder), USERS / TURNS (cases, default
# 200 each), K (items justified per case, default 5), BATCH (cases per recommend_many call, default 8), ARMS (extra
# `--variant` specs, space separated), EXTRA (more `eval run` options, e.g. "--judge-url http://host:8000/v1
# --judge-model NAME" for the judge arm), DATASETS ("movielens redial" by default; one of them to run only that one),
# PAIRED (cases of the paired chat-vs-fewshot comparison, default 40; when smaller than USERS / TURNS the
# `fewshot` arm runs on all cases and both arms on a separate seeded sample of PAIRED cases, since the earlier prompt
# costs ~15-20 s per case on 2 cores; PAIRED >= the cases: one run per dataset, both arms on all cases),
# WRAP (a command prefix for each `eval run`, e.g. "flock LOCKFILE"
# on a machine shared with other engine jobs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-eval-out/justifications}
DOCS=${DOCS:-docs/eval}
DATA=${DATA:-data/movielens-latest-small}
REDIAL=${REDIAL:-../shared/data/redial-dev}
USERS=${USERS:-200}
TURNS=${TURNS:-200}
K=${K:-5}
BATCH=${BATCH:-8}
DATASETS=${DATASETS:-movielens redial}

BASE="strategy=retrieval,explain=llm"
if "$PY" -c "import sys; from agent.settings import Settings; sys.exit('prompt_format' not in Settings.model_fields)"
then
  # prompt_format=auto (the default) is fewshot for the bundled base model, so `today` would repeat that arm:
  # the earlier prompt is prompt_format=chat (the instruction prompt flattened to text for a base model)
  CHAT=(--variant "chat:$BASE,prompt_format=chat")
  NEW=(--variant "fewshot:$BASE,prompt_format=fewshot")
  VARIANTS=("${CHAT[@]}" "${NEW[@]}")
  FORMATS="the earlier prompt (prompt_format=chat) vs the new few-shot layout (prompt_format=fewshot)"
else
  CHAT=()
  NEW=(--variant "today:$BASE")
  VARIANTS=("${NEW[@]}")
  FORMATS="today's prompt only: this checkout has no prompt_format setting, so the chat and few-shot arms were not run"
fi
for spec in ${ARMS:-}; do VARIANTS+=(--variant "$spec"); NEW+=(--variant "$spec"); done
# shellcheck disable=SC2206
WRAP_CMD=(${WRAP:-})

run_eval() {  # run_eval DATA CASES OUT NAME VARIANT...: one `eval run`, timed into timings.txt
  local data=$1 cases=$2 out=$3 label=$4 t0
  shift 4
  t0=$(date +%s)
  # shellcheck disable=SC2086
  "${WRAP_CMD[@]}" "$PY" -m recagent eval run "$data" --users "$cases" --k "$K" --seed 0 --batch-size "$BATCH" \
    "$@" --out "$out" --resume ${EXTRA:-} > "$out.log"
  echo "$label: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/timings.txt"
}

mkdir -p "$OUT"
RUNS=()
PAIRED_NOTE=""
for name in $DATASETS; do
  case "$name" in
    movielens) data="$DATA"; cases="$USERS" ;;
    redial) data="$REDIAL"; cases="$TURNS" ;;
    *) echo "unknown dataset $name (use movielens and/or redial)" >&2; exit 2 ;;
  esac
  paired=${PAIRED:-40}
  if [ "$paired" -lt "$cases" ] && [ ${#CHAT[@]} -gt 0 ]; then
    run_eval "$data" "$cases" "$OUT/$name" "$name ($cases cases, new format)" "${NEW[@]}"
    run_eval "$data" "$paired" "$OUT/$name-paired" "$name ($paired cases, paired)" "${VARIANTS[@]}"
    RUNS+=("$OUT/$name" "$OUT/$name-paired")
    PAIRED_NOTE=" The few-shot arm alone runs on all cases; the earlier prompt and the few-shot arm are compared on a \
separate seeded sample of $paired cases per dataset (the sections of $paired cases)."
  else
    run_eval "$data" "$cases" "$OUT/$name" "$name" "${VARIANTS[@]}"
    RUNS+=("$OUT/$name")
  fi
done

PAIRED=${PAIRED:-40}
SIZES="USERS=$USERS TURNS=$TURNS K=$K BATCH=$BATCH PAIRED=$PAIRED"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
TIMES=$(tr '\n' ';' < "$OUT/timings.txt" | sed 's/;$//')
PREAMBLE="Produced by \`bash eval/reports/justifications.sh\` (\`make report-text\`; $SIZES) on \
$(date -u +%Y-%m-%d), $(nproc) CPU cores, load average $LOAD at the end; arms: $FORMATS. Run times: $TIMES \
(this and earlier invocations of the same OUT). Every arm keeps the fused retrieval order, so the arms justify the \
same items.$PAIRED_NOTE"
"$PY" -m recagent eval text-report "${RUNS[@]}" --out "$DOCS/justifications.md" \
  --title "Justifications: what the LLM writes" --preamble "$PREAMBLE"
