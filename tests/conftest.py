import os
from pathlib import Path

import pytest
import torch

DATA_DIR = Path(os.environ.get("STRUCTNETS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"shared data directory {DATA_DIR} not found; set STRUCTNETS_DATA_DIR")
    return DATA_DIR


@pytest.fixture
def one_thread():
    """One intra-op thread, for small models: on a busy two-core machine two threads per
    operation were 20x slower (threads waiting on each other)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
