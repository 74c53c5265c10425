#!/usr/bin/env bash
# What the lent GPU machine lacks, gathered here into .gpu_payload/ (git-ignored) before a GPU
# session: that machine reaches no network, and its image has torch, transformers, accelerate,
# tokenizers, pyarrow, ninja, psutil and msgpack, but not datasets, evaluate, seqeval or DeepSpeed
# (see the device tool's KINDS.md). Each device call names `.gpu_payload` in `carry`.
#
#   bash benchmarks/gpu_payload.sh            # wheels for CPython 3.12 on x86-64 + one corpus shard + GLUE
#
# Its size counts towards the 64 MiB a device call may carry with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${ELECTRA_HF_SHARED:-../shared}
PAYLOAD=.gpu_payload
mkdir -p "$PAYLOAD/whl" "$PAYLOAD/data/corpus/gutenberg" "$PAYLOAD/data/glue"

platforms=()
for n in 28 27 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
download() {
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${platforms[@]}" -d "$PAYLOAD/whl" "$@"
}
# datasets and what it needs beyond the image; the tokenizers release with every overflowing QA
# window (the image's 0.23.2 drops them); evaluate and seqeval for the fine-tuning metrics.
download datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6 tokenizers==0.23.3
# DeepSpeed (ZeRO-2 check): a pure-Python wheel built here (PyPI ships a source archive), and the
# libraries it imports that the image lacks.
download hjson pydantic pydantic-core annotated-types typing-inspection
if ! ls "$PAYLOAD"/whl/deepspeed-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$PAYLOAD/whl" deepspeed==0.19.8
fi
if ! ls "$PAYLOAD"/whl/seqeval-*.whl >/dev/null 2>&1; then
    python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$PAYLOAD/whl" seqeval==1.2.2
fi

cp "$SHARED/data/corpus/gutenberg/gutenberg_05.txt.gz" "$PAYLOAD/data/corpus/gutenberg/"
for task in CoLA SST-2 MRPC STS-B RTE; do
    mkdir -p "$PAYLOAD/data/glue/$task"
    cp "$SHARED/data/glue/$task/train.tsv" "$SHARED/data/glue/$task/dev.tsv" "$PAYLOAD/data/glue/$task/"
done
du -sh "$PAYLOAD"
ls "$PAYLOAD/whl"
