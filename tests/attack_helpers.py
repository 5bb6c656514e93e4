"""Small helpers the attack tests share."""
from __future__ import annotations

import torch


def run(atk, x, y, seed=0):
    """As the evaluator runs an attack: the global generator seeded, and given back afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return atk(x, y)


def correct(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y
