"""Shared pytest set-up: puts tests/ on sys.path (so ``from tiny_colpali import ...`` works) and tiny-model fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Bare collection names (cranfield, med) resolve under the checkout's ../shared/data, whatever folder a test runs in.
os.environ.setdefault("LIR_ROBUST_DATA_ROOT", str((TESTS.parent.parent / "shared" / "data").resolve()))


@pytest.fixture(scope="session")
def tiny_colqwen2():
    """``(model, processor)``: a tiny random ColQwen2 (eval mode); share it, do not train it in place."""
    pytest.importorskip("colpali_engine")
    from tiny_colpali import build_tiny_colqwen2

    return build_tiny_colqwen2(seed=0)


@pytest.fixture(scope="session")
def tiny_colqwen2_dir(tmp_path_factory):
    """A folder holding a saved tiny ColQwen2 + processor, loadable with ``from_pretrained(path)``."""
    pytest.importorskip("colpali_engine")
    from tiny_colpali import save_tiny_colqwen2

    return save_tiny_colqwen2(tmp_path_factory.mktemp("tiny-colqwen2"))


@pytest.fixture
def fresh_accelerate_state():
    """Each in-process fine-tune builds its own Accelerator; forget the previous one's shared state after the test."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
