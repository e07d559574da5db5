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
