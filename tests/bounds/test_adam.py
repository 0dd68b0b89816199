"""The bound optimisers' Adam matches torch.optim.Adam with ExponentialLR step for step."""
import torch

from verifier.bounds.adam import Adam


def test_same_trajectory_as_torch_adam_with_exponential_decay():
    torch.manual_seed(0)
    target = torch.randn(5, 3)
    a1, b1 = torch.rand(5, 3, requires_grad=True), torch.rand(4, requires_grad=True)
    a2, b2 = a1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    ours = Adam([([a1], 0.1), ([b1], 0.05)], decay=0.9)
    ref = torch.optim.Adam([{"params": [a2], "lr": 0.1}, {"params": [b2], "lr": 0.05}])
    sched = torch.optim.lr_scheduler.ExponentialLR(ref, 0.9)
    for _ in range(25):
        for a, b, opt in ((a1, b1, ours), (a2, b2, ref)):
            opt.zero_grad()
            (((a - target) ** 2).sum() + b.sin().sum()).backward()
            opt.step()
        sched.step()
        assert torch.allclose(a1, a2, atol=1e-6) and torch.allclose(b1, b2, atol=1e-6)


def test_parameters_without_gradient_stay_put():
    p, q = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = Adam([([p, q], 0.1)])
    p.sum().backward()
    opt.step()
    assert torch.equal(q, torch.ones(2)) and not torch.equal(p, torch.ones(3))
