"""Fixtures shared by every test folder."""
import pytest

from verifier.threads import cpu_threads


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: the tiny test networks gain nothing from more, and the shared
    cores are not oversubscribed (also repeatable sums)."""
    with cpu_threads(1):
        yield
