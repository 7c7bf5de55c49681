#!/usr/bin/env bash
# The CUDA checks of the training, bench and export paths, as one script for a GPU machine:
#   1. `reid bench` of LMBN_n at 384x128: eval at batches 1,64,256 and a train step at 6x8,
#      fp32 / bf16 / fp16, contiguous / channels_last, cudnn.benchmark off / on;
#   2. the train step at 16x8 with the same settings;
#   3. `reid train recipes/lmbn_n.yaml` on a Market-1501 folder for a few epochs with
#      `train.amp` fp16 and bf16 (images/s, loss, peak memory per epoch in metrics.jsonl),
#      then `reid eval --rerank` of each run;
#   4. `reid export` of the first run to ONNX and `reid embed` of the query images from the
#      checkpoint on the GPU and from the export: the features must agree;
#   5. the test suite with the GPU visible (REID_TEST_CUDA=1), with whatever time is left
#      (its two-process torchrun tests need two GPUs).
# A step that fails is logged and the next one runs; the exit status counts the failures.
#
# Usage: benchmarks/gpu_check.sh MARKET_DIR OUT_DIR
#   MARKET_DIR  a Market-1501 release folder (bounding_box_train/, bounding_box_test/, query/)
#   OUT_DIR     where the reports go: log.txt, bench_*.json, runs.tar.gz, pytest.txt
# Environment: PY (python, default python3), EPOCHS (default 6), WORKERS (default 8),
#   BUDGET_S (seconds for the whole script, default 520: the test suite gets what is left),
#   SETS (extra `--set` overrides for every command, space-separated; e.g. a small model for a
#   dry run on a CPU), BATCHES (eval batch sizes, default 1,64,256), AMPS (train.amp settings,
#   default "fp16 bf16"), DEVICE (of `reid embed`, default cuda).
set -u
MARKET=${1:?usage: gpu_check.sh MARKET_DIR OUT_DIR}
OUT=${2:?usage: gpu_check.sh MARKET_DIR OUT_DIR}
PY=${PY:-python3}
EPOCHS=${EPOCHS:-6}
WORKERS=${WORKERS:-8}
BUDGET_S=${BUDGET_S:-520}
BATCHES=${BATCHES:-1,64,256}
AMPS=${AMPS:-fp16 bf16}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
MARKET=$(realpath "$MARKET")
OUT=$(realpath "$OUT")
cd "$(dirname "$0")/.." || exit 1  # the repository root: recipes/ and the package
LOG="$OUT/log.txt"
WORK=$(mktemp -d)
failures=0
sets=(--set model.pretrained=none)
for s in ${SETS:-}; do sets+=(--set "$s"); done

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, count a failure
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || failures=$((failures + 1))
}
reid=("$PY" -m reidcli)

{
    date -u
    nvidia-smi -L 2>&1 || true
    "$PY" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
"device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
} >>"$LOG" 2>&1

step bench-6x8 200 "${reid[@]}" bench recipes/lmbn_n.yaml --mode both --batch "$BATCHES" \
    --amp --dtype bf16,fp16 --channels-last --cudnn-benchmark --warmup 3 --iters 15 \
    "${sets[@]}" --quiet --out "$OUT/bench_lmbn_n_6x8.json"
step bench-train-16x8 120 "${reid[@]}" bench recipes/lmbn_n.yaml --mode train \
    --amp --dtype bf16,fp16 --channels-last --cudnn-benchmark --warmup 3 --iters 10 \
    --set data.p=16 "${sets[@]}" --quiet --out "$OUT/bench_lmbn_n_train_16x8.json"

step prepare 120 "${reid[@]}" prepare market1501 --root "$MARKET" --out "$WORK/market" --json
for amp in $AMPS; do
    run="$WORK/runs/lmbn_n-$amp"
    step "train-$amp" 180 "${reid[@]}" train recipes/lmbn_n.yaml --out "$run" \
        --set data.root="$WORK/market" --set data.workers="$WORKERS" \
        --set train.epochs="$EPOCHS" --set schedule.warmup_epochs=1 --set train.eval_every=0 \
        --set train.amp="$amp" "${sets[@]}" --quiet
    step "eval-$amp" 90 "${reid[@]}" eval "$run" --rerank --json --quiet
done
tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='*.pt' runs 2>>"$LOG" || true

# The first run, exported to ONNX (parity-checked), embeds the query images on the GPU from the
# checkpoint and through ONNX Runtime from the export: the two feature sets must agree.
run="$WORK/runs/lmbn_n-${AMPS%% *}"
step export 180 "${reid[@]}" export "$run" --format onnx --out "$WORK/lmbn_n.onnx" --json
step embed-checkpoint 90 "${reid[@]}" embed "$run" "$MARKET/query" --device "$DEVICE" \
    --out "$WORK/query_ckpt.npz" --json --quiet
step embed-onnx 120 "${reid[@]}" embed "$WORK/lmbn_n.onnx" "$MARKET/query" \
    --out "$WORK/query_onnx.npz" --json --quiet
step embed-parity 30 "$PY" -c '
import sys, numpy as np
a, b = (np.load(p) for p in sys.argv[1:])
print("arrays", sorted(a.files))
x, y = a["features"].astype(np.float64), b["features"].astype(np.float64)
assert x.shape == y.shape, (x.shape, y.shape)
cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
print("images", len(x), "min cosine", cos.min(), "max abs diff", np.abs(x - y).max())
assert cos.min() > 0.999
' "$WORK/query_ckpt.npz" "$WORK/query_onnx.npz"

left=$((BUDGET_S - SECONDS))
if [ "$left" -gt 30 ]; then
    echo "=== pytest ($left s left)" >>"$LOG"
    REID_TEST_CUDA=1 timeout --kill-after=10 "$left" "$PY" -m pytest -q -p no:cacheprovider -n 8 \
        >"$OUT/pytest.txt" 2>&1
    echo "=== pytest: exit $? after $((SECONDS - BUDGET_S + left)) s" >>"$LOG"
else
    echo "=== pytest skipped: $left s left" >>"$LOG"
fi
rm -rf "$WORK"
echo "failures: $failures" | tee -a "$LOG"
exit "$failures"
