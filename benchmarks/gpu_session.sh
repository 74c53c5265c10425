#!/usr/bin/env bash
# Issue 6's GPU measurements, in three stages that each fit a 10-minute call on one H100
# (durations from the 2026-11-24 runs, benchmarks/results/gpu_summary.md):
#
#   bash benchmarks/gpu_session.sh check     # tests/test_cuda.py, with the compiled paths' gradients
#                                            # (not timed yet: 20 s for its first 6 tests, plus compiles)
#   bash benchmarks/gpu_session.sh bench_a   # ~7 min: Small and Base, bf16, batch 32
#   bash benchmarks/gpu_session.sh bench_b   # ~6 min: Base bf16 batch 128, Small fp32, two profiles
#
# Results and logs go to $OUT_DIR: by default the device tool's $OUT (what comes back from the lent
# machine), else benchmarks/results. Copy the gpu_*.{json,md} files into benchmarks/results.
# Set-up on a bare lent machine (benchmarks/results/gpu_summary.md): wheels carried in .whl/ are
# installed into /tmp/site when `datasets` is missing, and .gpu_shared/ (the corpus that
# tests/test_cuda.py's train_pretrain test needs; skipped without it, shown by -rs) becomes
# ELECTRA_HF_SHARED. Each
# command's output goes to $LOG_DIR (default: OUT_DIR) as <name>.log; a failing step does not stop
# the others, and the script's exit status is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-${OUT:-benchmarks/results}}
LOG_DIR=${LOG_DIR:-$OUT_DIR}
mkdir -p "$OUT_DIR" "$LOG_DIR"
export PYTHONUNBUFFERED=1
if ! python -c "import datasets" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .gpu_shared ] && [ -z "${ELECTRA_HF_SHARED:-}" ]; then
    export ELECTRA_HF_SHARED=$PWD/.gpu_shared
fi
failed=0

run() {  # run NAME COMMAND...: log to $LOG_DIR/NAME.log, print the last lines, count failures
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" >"$LOG_DIR/$name.log" 2>&1; then
        failed=$((failed + 1))
        echo "!! $name failed (see $LOG_DIR/$name.log)"
    fi
    tail -n 12 "$LOG_DIR/$name.log"
}

bench() {  # bench NAME ARGS...: one bench_pretrain_step.py run on CUDA
    local name=$1
    shift
    run "$name" python benchmarks/bench_pretrain_step.py --device cuda --rounds 3 --out_dir "$OUT_DIR" --name "$name" "$@"
}

case "${1:-}" in
check)
    # includes check_compiled_gradients.compare for the whole model (with and without CUDA graphs)
    # and the layers; run that script directly for its readable lines
    run test_cuda python -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
    ;;
bench_a)
    bench gpu_small_bf16_b32 --presets small --precisions bf16 --batch_size 32 \
        --variants naive electra_hf compile compile_model_cudagraphs
    bench gpu_base_bf16_b32 --presets base --precisions bf16 --batch_size 32 \
        --variants naive electra_hf compile compile_model_cudagraphs
    ;;
bench_b)
    bench gpu_base_bf16_b128 --presets base --precisions bf16 --batch_size 128 \
        --variants naive electra_hf compile_model_cudagraphs
    bench gpu_small_fp32_b32 --presets small --precisions fp32 --batch_size 32 \
        --variants naive electra_hf compile_model_cudagraphs
    run profile_small python benchmarks/profile_gpu_step.py --preset small --precision bf16 --batch_size 32 --out_dir "$OUT_DIR"
    run profile_base python benchmarks/profile_gpu_step.py --preset base --precision bf16 --batch_size 128 --out_dir "$OUT_DIR"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh check|bench_a|bench_b" >&2
    exit 2
    ;;
esac
echo "== $failed step(s) failed"
exit "$failed"
