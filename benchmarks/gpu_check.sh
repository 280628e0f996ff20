#!/usr/bin/env bash
# One prepared GPU check: every CUDA path of the framework, run once on a lent GPU machine (device kind
# nvidia-h200: Python 3.12, torch 2.11, no package registry, 64 MiB travel, one command of at most 8 min).
#
#   bash benchmarks/gpu_check.sh prepare [--no-download]
#       here (CPU, pip registry): builds Fashion-MNIST-LT if missing, downloads the wheels the GPU machine lacks
#       into .whl/ (git-ignored), checks each wheel's Requires-Dist, checks that the working tree + .whl +
#       data/fashion_mnist_lt fit in 64 MiB, prints the device command, the carry list and timeout_s.
#       --no-download: no network; check the wheels already in .whl/ (a warning when there are none).
#   bash benchmarks/gpu_check.sh run [--budget S] [--only 1,3,...] [--max-configs N] [--out DIR]
#       there (repo root): installs .whl/*.whl into /tmp/site, prints nvidia-smi and versions, then
#       1 CE 2 epochs (AMP fp16 + GradScaler) through data_parallel_train.sh on GPU 0, then valid.py on it
#       2 the same through distributed_data_parallel_train.sh (torchrun, NCCL), then valid.py
#       3 2 epochs (AMP) of every configs/fashion_mnist_lt/ config whose METHOD is not ce/wb (found at run time)
#       4 benchmarks/throughput.py --device cuda at batch 128 (with part (c), the K-expert ratios) and 512
#       5 benchmarks/compile_ratio.py: torch.compile vs eager ResNet-32 training step
#       each step under `timeout`, within --budget seconds in all (default 420); a failing step is recorded and
#       the next one runs; a summary table ends the output. Everything goes to $OUT when set (else
#       output/gpu_check/): gpu_check.log, summary.md/.json, throughput_b128.md, throughput_b512.md,
#       compile_ratio.md and gpu_check_files.tar.gz (every step's log, results, JSONs; no checkpoints).
#   bash benchmarks/gpu_check.sh run --dry [--out DIR]
#       the same steps on this CPU with tiny sizes (1 epoch of ~100 images, gloo, throughput --smoke once,
#       the first multi-expert config only, torch.compile with the `eager` backend), so the script cannot
#       rot; tests/test_gpu_check.py runs it.
set -uo pipefail  # no -e: a failing step is recorded and the next one still runs
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
HELPER=benchmarks/gpu_check.py
WHL=.whl
DATA=data/fashion_mnist_lt/fmnist_lt_if100
CE_CFG=configs/fashion_mnist_lt/ce_res32.yaml

die() { echo "error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------- prepare
prepare() {
  local download=1
  while [ $# -gt 0 ]; do
    case $1 in
      --no-download|--check-only) download=0 ;;
      *) die "prepare: unknown option $1" ;;
    esac
    shift
  done
  local fail=0 lacking=""
  echo "== data: $DATA"
  if ! ls "$DATA"/*_train.json >/dev/null 2>&1; then
    echo "   missing: building it (python3 tools/build_fashion_mnist_lt.py)"
    "$PY" tools/build_fashion_mnist_lt.py || die "could not build Fashion-MNIST-LT (needs the Debian package dataset-fashion-mnist)"
  fi
  if git check-ignore -q data/fashion_mnist_lt; then
    echo "   data/fashion_mnist_lt is git-ignored: it must be carried"
  else
    echo "   data/fashion_mnist_lt is not ignored: it travels with the working tree"
  fi

  echo "== wheels for the GPU machine (Python 3.12) in $WHL/"
  # ignored here and in a fresh clone (.gitignore has /.whl/ too)
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qxF "/$WHL/" "$exclude" 2>/dev/null || echo "/$WHL/" >> "$exclude"
  grep -qxF "/$WHL/" .gitignore || echo "warning: .gitignore lacks /$WHL/ (a fresh clone would not ignore it)" >&2
  local plan
  plan=$("$PY" "$HELPER" wheels-plan) || die "wheels-plan failed"
  mkdir -p "$WHL"
  while IFS=$'\t' read -r needed name spec reason; do
    if [[ "$needed" == "#"* ]]; then echo "   ${needed#\# }"; continue; fi
    [ -n "$name" ] || continue
    # wheel file names: the name lower-cased, '-' and '.' as '_'; with ==VERSION only that version counts
    local stem want have others
    stem=$(echo "$name" | tr 'A-Z.-' 'a-z__')
    want="^${stem}-"
    [[ "$spec" == ==* ]] && want="^${stem}-${spec#==}-"
    have=$(ls "$WHL" | grep -i "$want" || true)
    others=$(ls "$WHL" | grep -i "^${stem}-" | grep -iv "$want" || true)
    if [ "$download" = 1 ] && [ -n "$others" ]; then
      echo "   removing $others (another version: two versions of one package stop pip's install)"
      (cd "$WHL" && rm -f $others)
    fi
    if [ "$download" = 1 ] && [ -z "$have" ]; then
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "$name$spec" 2>"$WHL/.pip_err" \
        && have=$(ls "$WHL" | grep -i "$want" || true)
    fi
    if [ -n "$have" ]; then
      echo "   $name$spec: $have ($reason)"
    elif [ "$needed" = 1 ]; then
      if [ "$download" = 1 ]; then
        echo "   $name$spec: NO WHEEL for Python 3.12 ($reason): $(grep -v 'is ignored' "$WHL/.pip_err" | tail -1)" >&2
        fail=1
      else
        echo "   $name$spec: not in $WHL/ (--no-download): the device run would lack it ($reason)" >&2
        lacking="$lacking $name"
      fi
    else
      echo "   $name$spec: skipped ($reason; $([ "$download" = 1 ] && echo "no wheel for Python 3.12: $(grep -v 'is ignored' "$WHL/.pip_err" | tail -1)" || echo "not downloaded"))"
    fi
  done <<< "$plan"
  rm -f "$WHL/.pip_err"
  "$PY" "$HELPER" wheel-deps "$WHL" | sed 's/^/   /' || fail=1

  echo "== size of what travels"
  "$PY" "$HELPER" sizes --carry "$WHL" data/fashion_mnist_lt | sed 's/^/   /'
  [ "${PIPESTATUS[0]}" = 0 ] || fail=1
  echo "== device command"
  "$PY" "$HELPER" command | sed 's/^/   /'
  if [ "$fail" != 0 ]; then
    echo "prepare: NOT ready (see the errors above)" >&2
    return 1
  fi
  if [ -n "$lacking" ]; then
    echo "prepare: ready, except for the wheels of$lacking (run prepare without --no-download before a device run)"
  else
    echo "prepare: ready"
  fi
}

# -------------------------------------------------------------------------------------------------- run
STEPS_TSV=""
DEADLINE=0
ONLY=""

selected() {  # selected STEP_NUMBER: whether --only lets this step run
  [ -z "$ONLY" ] && return 0
  [[ ",$ONLY," == *",$1,"* ]]
}

record() {  # record NAME STATUS SECONDS DETAIL LOG
  local detail=${4//$'\t'/ }
  detail=${detail//|/\/}
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${detail:0:160}" "$5" >> "$STEPS_TSV"
  echo "=== [$1] $2 (${3} s) ${detail:0:160}"
}

run_step() {  # run_step NAME CAP_SECONDS CMD ARGS...   (each step under `timeout`, within the deadline)
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 25 ]; then
    record "$name" "skipped" 0 "out of the time budget (${left} s left)" ""
    return
  fi
  local t=$cap
  [ "$t" -gt $((left - 10)) ] && t=$((left - 10))
  local log="$WORK/logs/$name.log"
  echo
  echo "=== [$name] timeout ${t} s: $*"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout -k 10 "$t" "$@" < /dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  local dur
  dur=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')
  if [ "$rc" = 0 ]; then
    record "$name" ok "$dur" "" "logs/$name.log"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$name" TIMEOUT "$dur" "killed after ${t} s" "logs/$name.log"
  else
    # the first 'error: ...' / 'XxxError: ...' line (torchrun ends with its own banner), else the last line
    local why
    why=$(grep -m1 -E '^error:|[A-Za-z]+Error: ' "$log" || grep -v '^\s*$' "$log" | tail -1)
    record "$name" FAILED "$dur" "rc $rc: $why" "logs/$name.log"
  fi
}

bundle() {  # the summary and the files that come back (the device tool returns at most 8 files from $OUT)
  trap - EXIT INT TERM
  local total=$SECONDS
  "$PY" - "$WORK/meta.json" "$MODE" "$total" <<'EOF' 2>/dev/null
import json, sys, time
path, mode, total = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    meta = json.load(open(path))
except Exception:
    meta = {}
meta.update(mode=mode, total_seconds=total, date=meta.get("date") or time.strftime("%Y-%m-%d %H:%M %Z"))
json.dump(meta, open(path, "w"), indent=2)
EOF
  echo
  "$PY" "$HELPER" summary "$STEPS_TSV" "$OUTDIR" --meta "$WORK/meta.json" \
    || { echo "(summary failed; the raw step table:)"; cat "$STEPS_TSV"; }
  cp "$WORK/throughput_b128/"*.md "$OUTDIR/throughput_b128.md" 2>/dev/null
  cp "$WORK/throughput_b512/"*.md "$OUTDIR/throughput_b512.md" 2>/dev/null
  cp "$WORK/compile/"*.md "$OUTDIR/compile_ratio.md" 2>/dev/null
  cp "$OUTDIR/summary.json" "$WORK/" 2>/dev/null
  tar -czf "$OUTDIR/gpu_check_files.tar.gz" -C "$WORK" --exclude='*.pth' --exclude='./site' --exclude='./bin' \
    --exclude='./data' . 2>/dev/null
  echo "files in $OUTDIR: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
  local failed
  failed=$(awk -F'\t' '$2 == "FAILED" || $2 == "TIMEOUT"' "$STEPS_TSV" | wc -l)
  [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  [ "$failed" = 0 ]
  exit $?
}

run_check() {
  local dry=0 budget="" max_configs="" outdir=""
  while [ $# -gt 0 ]; do
    case $1 in
      --dry) dry=1 ;;
      --budget) budget=$2; shift ;;
      --only) ONLY=$2; shift ;;
      --max-configs) max_configs=$2; shift ;;
      --out) outdir=$2; shift ;;
      *) die "run: unknown option $1" ;;
    esac
    shift
  done
  MODE=$([ "$dry" = 1 ] && echo "dry run on CPU" || echo "GPU run")
  budget=${budget:-$([ "$dry" = 1 ] && echo 500 || echo 420)}
  [[ "$budget" =~ ^[0-9]+$ ]] || die "--budget must be whole seconds"
  [[ -z "$ONLY" || "$ONLY" =~ ^[1-5](,[1-5])*$ ]] || die "--only takes step numbers 1-5, comma-separated (e.g. 3,5)"
  DEADLINE=$((SECONDS + budget))
  command -v timeout >/dev/null || die "the 'timeout' command (coreutils) is missing"

  # where things go: $OUT (the device tool's folder, at most 8 files come back) gets only the final files
  OWN_WORK=0
  if [ -n "$outdir" ]; then
    OUTDIR=$outdir
    WORK=$OUTDIR/work
  elif [ -n "${OUT:-}" ]; then
    OUTDIR=$OUT
    WORK=$(mktemp -d /tmp/gpu_check_work.XXXXXX)
    OWN_WORK=1
  else
    OUTDIR=output/$([ "$dry" = 1 ] && echo gpu_check_dry || echo gpu_check)
    WORK=$OUTDIR/work
  fi
  mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
  OUTDIR=$(cd "$OUTDIR" && pwd)
  rm -rf "$WORK"
  mkdir -p "$WORK/logs" "$WORK/bin"
  WORK=$(cd "$WORK" && pwd)
  rm -f "$OUTDIR"/{gpu_check.log,summary.md,summary.json,throughput_b128.md,throughput_b512.md,compile_ratio.md,gpu_check_files.tar.gz}
  STEPS_TSV=$WORK/steps.tsv
  : > "$STEPS_TSV"
  exec > >(tee -a "$OUTDIR/gpu_check.log") 2>&1
  TEE_PID=$!
  trap bundle EXIT
  trap 'echo "interrupted: bundling what there is"; exit 130' INT TERM

  echo "gpu_check: $MODE, budget ${budget} s, $(date -u '+%Y-%m-%d %H:%M UTC'), repo $ROOT at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "outputs: $OUTDIR (work folder $WORK)"

  # the launchers call `python`: make it the same interpreter as python3 (the GPU machine's python3 is
  # /opt/torch/.venv/bin/python3, which holds torch; a `python` elsewhere on PATH might not). Wrapper
  # scripts, not symlinks: a venv's interpreter finds its pyvenv.cfg only when called by its own path.
  local py3
  py3=$("$PY" -c 'import sys; print(sys.executable)') || die "$PY not found"
  for n in python python3; do
    printf '#!/bin/sh\nexec "%s" "$@"\n' "$py3" > "$WORK/bin/$n"
    chmod +x "$WORK/bin/$n"
  done
  export PATH="$WORK/bin:$PATH" PYTHON=python3 PYTHONUNBUFFERED=1
  echo "python/python3 for the launchers: $py3 ($("$py3" --version 2>&1))"

  local site=${GPU_CHECK_SITE:-/tmp/site}
  [ "$dry" = 1 ] && site=$WORK/site
  if ls "$WHL"/*.whl >/dev/null 2>&1; then
    PIP_ROOT_USER_ACTION=ignore run_step 0_wheels 120 "$py3" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$WHL"/*.whl
  else
    record 0_wheels skipped 0 "no $WHL/*.whl (run 'bash benchmarks/gpu_check.sh prepare' before a device run)" ""
  fi
  export PYTHONPATH="$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

  local dev gpu
  if [ "$dry" = 1 ]; then
    dev=cpu gpu=cpu
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  else
    dev=cuda gpu=0
  fi
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi 2>&1 | head -30
  else
    echo "nvidia-smi: not found$([ "$dry" = 1 ] && echo " (dry run)")"
  fi
  run_step 0_env 120 "$py3" "$HELPER" env "$dev" "$WORK/meta.json"

  # data: carried from the CPU machine (prepare); built here only if the Debian source is there
  if ! ls "$DATA"/*_train.json >/dev/null 2>&1; then
    run_step 0_data 120 "$py3" tools/build_fashion_mnist_lt.py
  fi
  local -a data_opts=() train_opts valid_opts
  local epochs=2
  if [ "$dry" = 1 ]; then
    epochs=1
    "$py3" "$HELPER" dry-data "$DATA" "$WORK/data" || echo "error: no dry data"
    data_opts=(DATASET.TRAIN_JSON "$WORK/data/dry_train.json" DATASET.VALID_JSON "$WORK/data/dry_val.json"
               DATASET.TEST_JSON "$WORK/data/dry_test.json" TRAIN.BATCH_SIZE 16 TEST.BATCH_SIZE 64
               TRAIN.NUM_WORKERS 0 TEST.NUM_WORKERS 0)
    echo "dry run: $epochs epoch on tiny subsets of $DATA (see above), batch 16, no DataLoader workers;"
    echo "  AMP on means bf16 autocast on CPU (fp16 + GradScaler only on CUDA); DDP through gloo"
  fi
  train_opts=(TRAIN.MAX_EPOCH "$epochs" TRAIN.AMP.ENABLE True OUTPUT_DIR "$WORK/runs" "${data_opts[@]}")
  valid_opts=(OUTPUT_DIR "$WORK/runs" TRAIN.AMP.ENABLE True DEVICE "$dev" "${data_opts[@]}")
  # per-step caps (seconds); the budget's deadline shortens them when time runs out
  local cap_train=120 cap_valid=60 cap_cfg=90 cap_tp=150 cap_tp2=90 cap_compile=150
  # dry: generous for a loaded 2-core machine (each step takes 5-10 s of CPU)
  [ "$dry" = 1 ] && cap_train=120 cap_valid=90 cap_cfg=120 cap_tp=120 cap_compile=120

  # 1: DataParallel launcher on GPU 0, AMP fp16 + GradScaler; then valid.py on its best checkpoint
  if selected 1; then
    run_step 1_dp_train "$cap_train" bash data_parallel_train.sh "$CE_CFG" "$gpu" "${train_opts[@]}" NAME gpu_ce_dp
    run_step 1_dp_valid "$cap_valid" "$py3" valid.py "$CE_CFG" NAME gpu_ce_dp "${valid_opts[@]}"
  fi
  # 2: DDP launcher, one process (NCCL on the GPU, gloo on the CPU)
  if selected 2; then
    local port
    port=$("$py3" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    run_step 2_ddp_train "$cap_train" env MASTER_PORT="$port" bash distributed_data_parallel_train.sh "$CE_CFG" 1 "$gpu" \
      "${train_opts[@]}" NAME gpu_ce_ddp
    run_step 2_ddp_valid "$cap_valid" "$py3" valid.py "$CE_CFG" NAME gpu_ce_ddp "${valid_opts[@]}"
  fi
  # 3: every multi-expert / multi-head config there is now (METHOD not ce/wb)
  if selected 3; then
    local max=${max_configs:-$([ "$dry" = 1 ] && echo 1 || echo 0)}
    local found
    found=$("$py3" "$HELPER" discover --max "$max")
    if [ -z "$found" ]; then
      record 3_multi_expert skipped 0 "no config in configs/fashion_mnist_lt/ has a METHOD other than ce/wb yet" ""
    else
      [ "$dry" = 1 ] && [ "$max" -gt 0 ] && echo "dry run: at most $max multi-expert config(s) (--max-configs)"
      while IFS=$'\t' read -r cfg method note; do
        [ -n "$cfg" ] || continue
        [ -n "$note" ] && echo "note: $cfg: $note"
        local stem
        stem=$(basename "$cfg" .yaml)
        run_step "3_$stem" "$cap_cfg" bash data_parallel_train.sh "$cfg" "$gpu" "${train_opts[@]}" NAME "gpu_$stem"
      done <<< "$found"
    fi
  fi
  # 4: throughput (framework vs bare, data pipeline, K-expert ratios in (c)) at batch 128 and 512
  if selected 4; then
    if [ "$dry" = 1 ]; then
      run_step 4_throughput_b128 "$cap_tp" "$py3" benchmarks/throughput.py --device cpu --smoke --threads 1 \
        --workers 1 --out "$WORK/throughput_b128"
      # the batch-512 run is the same script and options with another --batch: not repeated on the CPU
      record 4_throughput_b512 skipped 0 "dry: the same command as 4_throughput_b128 with --batch 512 --configs $CE_CFG" ""
    else
      run_step 4_throughput_b128 "$cap_tp" "$py3" benchmarks/throughput.py --device cuda --batch 128 --repeats 5 \
        --repeat-seconds 0.5 --out "$WORK/throughput_b128"
      # (c), the K-expert ratios, once is enough: only the (single-model) CE config at batch 512
      run_step 4_throughput_b512 "$cap_tp2" "$py3" benchmarks/throughput.py --device cuda --batch 512 --repeats 5 \
        --repeat-seconds 0.5 --configs "$CE_CFG" --out "$WORK/throughput_b512"
    fi
  fi
  # 5: torch.compile vs eager
  if selected 5; then
    if [ "$dry" = 1 ]; then
      echo "dry run: torch.compile with the 'eager' backend (graph capture only): inductor's code generation on" \
           "this CPU would take over a minute, so the compiled speed is not measured here"
      run_step 5_compile "$cap_compile" "$py3" benchmarks/compile_ratio.py --device cpu --backend eager --batch 4 \
        --iters 2 --repeats 2 --warmup 1 --threads 1 --out "$WORK/compile"
    else
      run_step 5_compile "$cap_compile" "$py3" benchmarks/compile_ratio.py --device cuda --batch 128 --repeats 5 \
        --out "$WORK/compile"
    fi
  fi
  exit 0  # the EXIT trap bundles, prints the summary and sets the exit status
}

case ${1:-} in
  prepare) shift; prepare "$@" ;;
  run) shift; run_check "$@" ;;
  *) echo "usage: bash benchmarks/gpu_check.sh prepare [--no-download] | run [--dry] [--budget S] [--only 1,3] [--max-configs N] [--out DIR]" >&2
     exit 2 ;;
esac
