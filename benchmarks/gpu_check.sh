#!/usr/bin/env bash
# The GPU check: every CUDA path of the framework, run once on a machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh [--budget SECONDS] [--dry] [--only 1,3,...] [--max-configs N] [--out DIR]
#
# Run from a checkout that is set up (bash tools/setup.sh, or the packages of requirements.txt) on the
# CUDA machine. It checks that CUDA works (one line and exit 2 if not), then runs, each step under `timeout`
# and all within --budget seconds (default 900):
#   1 CE, 2 epochs, AMP (fp16 + GradScaler), through data_parallel_train.sh on GPU 0, then valid.py on it
#   2 the same through distributed_data_parallel_train.sh (torchrun, NCCL), then valid.py
#   3 2 epochs (AMP) of every configs/fashion_mnist_lt/ config whose METHOD is not ce/wb (found at run time)
#   4 benchmarks/throughput.py --device cuda at batch 128 (with the K-expert ratios) and 512, then the
#     studies benchmarks/studies/ncl_experts.py (NCL's experts batched vs sequential) and vit_step.py
#   5 benchmarks/studies/compile_ratio.py: torch.compile vs eager ResNet-32 training step
# A failing step is recorded and the next one runs. Results go to benchmarks/results/ (or --out DIR):
# gpu_check.md / gpu_check.json (the step table, the machine), throughput_cuda.md/.json (batch 128),
# throughput_cuda_b512.md/.json, and in studies/: ncl_experts_cuda, vit_step_cuda and compile_ratio_cuda
# (.md/.json). Logs and the training runs stay in output/gpu_check/work/ (git-ignored). The data is
# Fashion-MNIST-LT, built if missing.
#   --dry        the same plan on this CPU with tiny sizes (1 epoch of ~100 images, gloo, throughput --smoke,
#                the first multi-expert config only, torch.compile with the `eager` backend); results go to
#                output/gpu_check_dry/ unless --out is given. tests/benchmarks/test_gpu_check.py runs it.
#   --only 3,5   run only these steps (e.g. to repeat the failed ones)
set -uo pipefail  # no -e: a failing step is recorded and the next one still runs
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
HELPER=benchmarks/gpu_check.py
DATA=data/fashion_mnist_lt/fmnist_lt_if100
CE_CFG=configs/fashion_mnist_lt/ce_res32.yaml
USAGE="usage: bash benchmarks/gpu_check.sh [--budget SECONDS] [--dry] [--only 1,3,...] [--max-configs N] [--out DIR]"

die() { echo "error: $*" >&2; exit 2; }

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
  local t0 t1 rc dur
  t0=$(date +%s.%N)
  timeout -k 10 "$t" "$@" < /dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
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

finish() {  # the summary and the result tables; the exit status says whether every step that ran passed
  trap - EXIT INT TERM
  echo
  "$PY" "$HELPER" summary "$STEPS_TSV" "$RESULTS" --meta "$WORK/meta.json" --mode "$MODE" --seconds "$SECONDS" \
    --logs "$(realpath -m --relative-to="$ROOT" "$WORK/logs")" \
    || { echo "(summary failed; the raw step table:)"; cat "$STEPS_TSV"; }
  local f
  for f in "$WORK"/throughput_b128/throughput_*; do
    [ -f "$f" ] && cp "$f" "$RESULTS/"
  done
  for f in "$WORK"/studies/*; do
    [ -f "$f" ] && mkdir -p "$RESULTS/studies" && cp "$f" "$RESULTS/studies/"
  done
  for f in "$WORK"/throughput_b512/throughput_*; do  # throughput_cuda.md -> throughput_cuda_b512.md
    [ -f "$f" ] && cp "$f" "$RESULTS/$(basename "${f%.*}")_b512.${f##*.}"
  done
  echo "results in $RESULTS: $(cd "$RESULTS" && ls gpu_check.* throughput_* studies/* 2>/dev/null | tr '\n' ' ')"
  echo "logs in $WORK/logs"
  local failed
  failed=$(awk -F'\t' '$2 == "FAILED" || $2 == "TIMEOUT"' "$STEPS_TSV" | wc -l)
  [ "$failed" = 0 ]
  exit $?
}

DRY=0
budget="" max_configs="" outdir=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry) DRY=1 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs SECONDS; $USAGE"; budget=$2; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs step numbers; $USAGE"; ONLY=$2; shift ;;
    --max-configs) [ $# -ge 2 ] || die "--max-configs needs N; $USAGE"; max_configs=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs DIR; $USAGE"; outdir=$2; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1'; $USAGE" ;;
  esac
  shift
done
MODE=$([ "$DRY" = 1 ] && echo "dry run on CPU" || echo "GPU run")
budget=${budget:-$([ "$DRY" = 1 ] && echo 500 || echo 900)}
[[ "$budget" =~ ^[0-9]+$ ]] || die "--budget must be whole seconds, got '$budget'"
[[ -z "$ONLY" || "$ONLY" =~ ^[1-5](,[1-5])*$ ]] || die "--only takes step numbers 1-5, comma-separated (e.g. 3,5)"
[[ -z "$max_configs" || "$max_configs" =~ ^[0-9]+$ ]] || die "--max-configs must be a whole number"
command -v timeout >/dev/null || die "the 'timeout' command (coreutils) is missing"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHON="$PY" PYTHONUNBUFFERED=1
if [ "$DRY" = 0 ]; then  # before anything is written: this is a GPU check
  "$PY" "$HELPER" cuda || exit 2
fi

# results (committed) and work (logs, runs; git-ignored)
WORK=output/$([ "$DRY" = 1 ] && echo gpu_check_dry || echo gpu_check)
RESULTS=${outdir:-$([ "$DRY" = 1 ] && echo "$WORK" || echo benchmarks/results)}
mkdir -p "$RESULTS" || die "cannot create $RESULTS"
rm -rf "$WORK/work"
WORK=$WORK/work
mkdir -p "$WORK/logs" || die "cannot create $WORK"
RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(cd "$WORK" && pwd)
STEPS_TSV=$WORK/steps.tsv
: > "$STEPS_TSV"
DEADLINE=$((SECONDS + budget))
exec > >(tee -a "$WORK/gpu_check.log") 2>&1
trap finish EXIT
trap 'echo "interrupted: writing the summary of what ran"; exit 130' INT TERM

echo "gpu_check: $MODE, budget ${budget} s, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | head -30
else
  echo "nvidia-smi: not found"
fi
dev=$([ "$DRY" = 1 ] && echo cpu || echo cuda)
gpu=$([ "$DRY" = 1 ] && echo cpu || echo 0)
[ "$DRY" = 1 ] && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run_step 0_env 120 "$PY" "$HELPER" env "$dev" "$WORK/meta.json"
if ! ls "$DATA"/*_train.json >/dev/null 2>&1; then
  run_step 0_data 300 "$PY" tools/build_fashion_mnist_lt.py
fi

data_opts=()
epochs=2
if [ "$DRY" = 1 ]; then
  epochs=1
  "$PY" "$HELPER" dry-data "$DATA" "$WORK/data" || echo "error: no dry data"
  data_opts=(DATASET.TRAIN_JSON "$WORK/data/dry_train.json" DATASET.VALID_JSON "$WORK/data/dry_val.json"
             DATASET.TEST_JSON "$WORK/data/dry_test.json" TRAIN.BATCH_SIZE 16 TEST.BATCH_SIZE 64
             TRAIN.NUM_WORKERS 0 TEST.NUM_WORKERS 0)
  echo "dry run: $epochs epoch on tiny subsets of $DATA, batch 16, no DataLoader workers;"
  echo "  AMP on means bf16 autocast on the CPU (fp16 + GradScaler only on CUDA); DDP through gloo"
fi
train_opts=(TRAIN.MAX_EPOCH "$epochs" TRAIN.AMP.ENABLE True OUTPUT_DIR "$WORK/runs" "${data_opts[@]}")
valid_opts=(OUTPUT_DIR "$WORK/runs" TRAIN.AMP.ENABLE True DEVICE "$dev" "${data_opts[@]}")
# per-step caps (seconds); the budget's deadline shortens them when time runs out
cap_train=300 cap_valid=120 cap_cfg=300 cap_tp=300 cap_tp2=200 cap_study=150 cap_compile=300
[ "$DRY" = 1 ] && cap_train=120 cap_valid=90 cap_cfg=120 cap_tp=120 cap_study=90 cap_compile=120

# 1: DataParallel launcher on GPU 0, AMP fp16 + GradScaler; then valid.py on its best checkpoint
if selected 1; then
  run_step 1_dp_train "$cap_train" bash data_parallel_train.sh "$CE_CFG" "$gpu" "${train_opts[@]}" NAME gpu_ce_dp
  run_step 1_dp_valid "$cap_valid" "$PY" valid.py "$CE_CFG" NAME gpu_ce_dp "${valid_opts[@]}"
fi
# 2: DDP launcher, one process (NCCL on the GPU, gloo on the CPU)
if selected 2; then
  port=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  run_step 2_ddp_train "$cap_train" env MASTER_PORT="$port" bash distributed_data_parallel_train.sh "$CE_CFG" 1 "$gpu" \
    "${train_opts[@]}" NAME gpu_ce_ddp
  run_step 2_ddp_valid "$cap_valid" "$PY" valid.py "$CE_CFG" NAME gpu_ce_ddp "${valid_opts[@]}"
fi
# 3: every multi-expert / multi-head config there is now (METHOD not ce/wb)
if selected 3; then
  max=${max_configs:-$([ "$DRY" = 1 ] && echo 1 || echo 0)}
  found=$("$PY" "$HELPER" discover --max "$max")
  if [ -z "$found" ]; then
    record 3_multi_expert skipped 0 "no config in configs/fashion_mnist_lt/ has a METHOD other than ce/wb" ""
  else
    [ "$max" -gt 0 ] && echo "at most $max multi-expert config(s) (--max-configs)"
    while IFS=$'\t' read -r cfg method note; do
      [ -n "$cfg" ] || continue
      [ -n "$note" ] && echo "note: $cfg: $note"
      stem=$(basename "$cfg" .yaml)
      run_step "3_$stem" "$cap_cfg" bash data_parallel_train.sh "$cfg" "$gpu" "${train_opts[@]}" NAME "gpu_$stem"
    done <<< "$found"
  fi
fi
# 4: throughput (framework vs bare, data pipeline, K-expert ratios in (c)) at batch 128 and 512; two studies
if selected 4; then
  if [ "$DRY" = 1 ]; then
    run_step 4_throughput_b128 "$cap_tp" "$PY" benchmarks/throughput.py --device cpu --smoke --threads 1 \
      --workers 1 --out "$WORK/throughput_b128"
    # the batch-512 run is the same script and options with another --batch: not repeated on the CPU
    record 4_throughput_b512 skipped 0 "dry: the same command as 4_throughput_b128 with --batch 512 --configs $CE_CFG" ""
    timing=(--device cpu --smoke --threads 1) ncl=(--variants fp32)
  else
    run_step 4_throughput_b128 "$cap_tp" "$PY" benchmarks/throughput.py --device cuda --batch 128 --repeats 5 \
      --repeat-seconds 0.5 --out "$WORK/throughput_b128"
    # (c), the K-expert ratios, once is enough: only the (single-model) CE config at batch 512
    run_step 4_throughput_b512 "$cap_tp2" "$PY" benchmarks/throughput.py --device cuda --batch 512 --repeats 5 \
      --repeat-seconds 0.5 --configs "$CE_CFG" --out "$WORK/throughput_b512"
    timing=(--device cuda --batch 128 --repeats 5 --repeat-seconds 0.5) ncl=(--variants fp16_channels_last)
  fi
  run_step 4_ncl_experts "$cap_study" "$PY" benchmarks/studies/ncl_experts.py "${timing[@]}" "${ncl[@]}" \
    --out "$WORK/studies"
  run_step 4_vit_step "$cap_study" "$PY" benchmarks/studies/vit_step.py "${timing[@]}" --out "$WORK/studies"
fi
# 5: torch.compile vs eager
if selected 5; then
  if [ "$DRY" = 1 ]; then
    echo "dry run: torch.compile with the 'eager' backend (graph capture only; inductor's code generation on a CPU" \
         "takes over a minute), so the compiled speed is not measured here"
    run_step 5_compile "$cap_compile" "$PY" benchmarks/studies/compile_ratio.py --device cpu --backend eager \
      --batch 4 --iters 2 --repeats 2 --warmup 1 --threads 1 --out "$WORK/studies"
  else
    run_step 5_compile "$cap_compile" "$PY" benchmarks/studies/compile_ratio.py --device cuda --batch 128 \
      --repeats 5 --out "$WORK/studies"
  fi
fi
exit 0  # the EXIT trap writes the summary and sets the exit status
