"""Training tests run torch on one thread: on a shared CPU, two-thread OpenMP regions on tiny tensors wait
for each other's time slices and run ~10× slower. Subprocesses get OMP_NUM_THREADS=1 the same way."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)
