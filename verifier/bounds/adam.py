"""Adam with an exponentially decaying step, for alpha- and beta-CROWN's slope optimisation.

``torch.optim.Adam``'s first step imports ``torch._dynamo`` (about 2.5 s on a 2-core machine),
which every short-lived ``nnverify verify`` process would pay on its first alpha-CROWN call.
This is the same update (Kingma and Ba, 2015; bias-corrected moments), written out.
"""
from __future__ import annotations

import math

import torch


class Adam:
    """Adam over parameter groups ``[(tensors, lr), ...]``; ``step()`` also decays every lr by ``decay``."""

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]], decay: float = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.groups = [(list(params), float(lr)) for params, lr in groups if params]
        self.decay, self.betas, self.eps, self.t = decay, betas, eps, 0
        self.moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for ps, _ in self.groups for p in ps}

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter with a gradient, then the learning rates decay."""
        self.t += 1
        b1, b2 = self.betas
        correction1, correction2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for params, lr in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                m, v = self.moments[id(p)]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(correction2)).add_(self.eps)
                p.addcdiv_(m, denom, value=-lr / correction1)
        self.groups = [(params, lr * self.decay) for params, lr in self.groups]
