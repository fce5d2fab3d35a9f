import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Inputs are tiny: one thread is faster than two, and immune to a busy core (OpenMP threads
    # that spin-wait for a descheduled peer make a forward pass tens of times slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
