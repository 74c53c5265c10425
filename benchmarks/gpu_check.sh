#!/usr/bin/env bash
# The GPU checks of the pre-training step, in stages that fit the lent machine's 10-minute calls.
#
#   bash benchmarks/gpu_payload.sh                               # here, first: wheels + data into .gpu_payload/
#   bash benchmarks/gpu_check.sh train small tests               # device call 1 (carry .gpu_payload; ~8 min)
#   bash benchmarks/gpu_check.sh base engines                    # device call 2 (~5 min)
#   bash benchmarks/gpu_check.sh rehearse train small engines    # the same stages at tiny size on a CPU
#
# Stages:
#   train    benchmarks/train_check.py: train_pretrain.py eager and fast from one initialisation on real
#            text (200 steps, Small, bf16, batch 128), windows compared, gradients compared, plot
#   small    ELECTRA-Small, bf16, batch 128: naive, electra_hf (the default fast path), electra_hf_eager;
#            then the loop's tokens/s from the train stage against the bare step's (loop.json)
#   base     ELECTRA-Base, bf16, batch 128 (naive, electra_hf) and 256 (electra_hf): MFU
#   engines  train_pretrain.py under FSDP and under DeepSpeed ZeRO-2, one process each: a few steps, a
#            checkpoint, a resume, an export that plain transformers loads (engines.json)
#   tests    python -m pytest tests/test_cuda.py
# Results: benchmarks/results/gpu/*.json (flat records), train_check.{json,png}, reports/ (full
# benchmark reports), logs/. Under the device tool each stage also leaves <stage>.tar.gz in $OUT (a
# call returns at most 8 files). The exit status is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
REHEARSE=0
if [ "${1:-}" = rehearse ]; then REHEARSE=1; shift; fi
STAGES=${*:-train small base engines tests}
RESULTS=${RESULTS:-benchmarks/results/gpu}
if [ "$REHEARSE" = 1 ]; then RESULTS=${RESULTS_REHEARSAL:-/tmp/gpu_check_rehearsal}; fi
mkdir -p "$RESULTS/reports" "$RESULTS/logs"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

if [ -d .gpu_payload/whl ] && ! python3 -c "import datasets, deepspeed" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu_payload/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .gpu_payload/data ] && [ -z "${ELECTRA_HF_SHARED:-}" ]; then export ELECTRA_HF_SHARED=$PWD/.gpu_payload; fi
SHARED=${ELECTRA_HF_SHARED:-$PWD/../shared}
CORPUS=$SHARED/data/corpus/gutenberg/gutenberg_05.txt.gz
python3 -c "import torch, transformers, accelerate, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
failed=0

run() {  # run NAME COMMAND...: log to $RESULTS/logs/NAME.log, show its end, count a failure
    local name=$1 start=$SECONDS
    shift
    echo "== $name: $*"
    if ! "$@" >"$RESULTS/logs/$name.log" 2>&1; then
        failed=$((failed + 1))
        echo "!! $name failed"
    fi
    tail -n 8 "$RESULTS/logs/$name.log"
    echo "== $name: $((SECONDS - start)) s"
}

bench() {  # bench NAME ARGS...: one bench_pretrain_step run, full report in reports/, records beside
    local name=$1
    shift
    local size=(--presets small --precisions bf16 --rounds 3)
    if [ "$REHEARSE" = 1 ]; then
        size=(--presets tiny --precisions fp32 --rounds 1 --steps 2 --warmup 1 --batch_size 16 --seq_len 64 --vocab_size 2000)
    fi
    run "$name" python3 -m benchmarks.bench_pretrain_step "${size[@]}" "$@" --out_dir "$RESULTS/reports" \
        --records_dir "$RESULTS" --name "$name"
}

stage_train() {
    local size=()
    if [ "$REHEARSE" = 1 ]; then size=(--rehearse --fast_flags "--torch_compile true --torch_compile_scope model"); fi
    run train_check python3 -m benchmarks.train_check --train_file "$CORPUS" --out_dir "$RESULTS" \
        --work_dir /tmp/train_check_runs "${size[@]}"
}

stage_small() {
    if [ "$REHEARSE" = 1 ]; then
        bench small_bf16_b128 --variants naive electra_hf electra_hf_eager
    else
        bench small_bf16_b128 --batch_size 128 --variants naive electra_hf electra_hf_eager
    fi
    run loop python3 -m benchmarks.loop_check --train_check "$RESULTS/train_check.json" \
        --bench "$RESULTS/small_bf16_b128.json" --out "$RESULTS/loop.json"
}

stage_base() {
    if [ "$REHEARSE" = 1 ]; then
        bench base_bf16_b128 --variants naive electra_hf
        return
    fi
    bench base_bf16_b128 --presets base --batch_size 128 --variants naive electra_hf --rounds 2
    bench base_bf16_b256 --presets base --batch_size 256 --variants electra_hf --rounds 2
}

stage_engines() {
    run engines python3 -m benchmarks.engine_check --train_file "$CORPUS" --out "$RESULTS/engines.json" \
        $([ "$REHEARSE" = 1 ] && echo --rehearse)
}

stage_tests() {
    run test_cuda python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
}

for stage in $STAGES; do
    "stage_$stage"
    if [ -n "${OUT:-}" ]; then  # the device tool's folder of files to bring back
        tar -czf "$OUT/$stage.tar.gz" -C "$RESULTS" . 2>/dev/null
    fi
done
echo "== $failed step(s) failed"
exit "$failed"
