"""Input splitting's choice of dimension: width x sensitivity, and the guard against starving a dim."""
from __future__ import annotations

import pytest
import torch

from verifier.config import BabConfig
from verifier.search.input_split import STARVED, choose_dims


def test_width_times_sensitivity_picks_the_dim():
    """Without sensitivities the widest (relative) dim; with them the largest width x |sensitivity|."""
    root = torch.tensor([1.0, 1.0, 4.0])
    lo = torch.zeros(2, 3)
    hi = torch.tensor([[0.5, 0.25, 1.0], [0.5, 0.5, 0.5]])
    assert choose_dims(lo, hi, root, []).tolist() == [0, 0]
    sens = torch.tensor([[0.1, 8.0, 0.1], [-0.1, 0.1, -3.0]])
    assert choose_dims(lo, hi, root, [sens]).tolist() == [1, 2]
    # two estimates are each scaled to 1 before they are summed
    other = torch.tensor([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    assert choose_dims(lo, hi, root, [sens, other]).tolist() == [0, 1]


def test_zero_width_dims_are_never_chosen():
    """A dim already of zero width is skipped even when its sensitivity is the largest."""
    root = torch.ones(3)
    lo, hi = torch.zeros(1, 3), torch.tensor([[0.0, 0.1, 0.2]])
    assert choose_dims(lo, hi, root, [torch.tensor([[1e6, 1.0, 0.0]])]).tolist() == [1]


def test_a_starved_dim_is_split():
    """Once a dim is STARVED times relatively wider than the scored choice, it is split instead."""
    root = torch.ones(2)
    lo = torch.zeros(2, 2)
    sens = torch.tensor([[1e9, 0.0], [1e9, 0.0]])
    hi = torch.tensor([[1.0 / STARVED * 2, 1.0], [1.0 / STARVED / 2, 1.0]])
    assert choose_dims(lo, hi, root, [sens]).tolist() == [0, 1]


def test_unknown_branching_is_an_error():
    with pytest.raises(ValueError, match="input_branching"):
        BabConfig(input_branching="widest")
