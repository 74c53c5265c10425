"""benchmarks/check_compiled_gradients.py on the CPU: the whole-model compile gives eager's losses
and gradients for both losses. (tests/test_cuda.py runs the same check on CUDA, with and without
CUDA graphs; under torch 2.11 the generator's compiled gradient was all zero before a fix.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_whole_model_compile_gives_eager_gradients_on_cpu():
    import check_compiled_gradients

    rows = check_compiled_gradients.compare("cpu", "model")
    assert [row["loss"] for row in rows] == ["generator_loss", "discriminator_loss"]
    for row in rows:
        assert row["ok"], row
        assert row["compiled_grad_norm"] > 0 and row["compiled_loss"] == pytest.approx(row["eager_loss"], rel=1e-4)
        assert row["compiled_grad_norm"] == pytest.approx(row["eager_grad_norm"], rel=1e-3)
