import torch

from bench.train import temperature_loss


def test_gradient_is_softmax_minus_onehot_over_T():
    torch.manual_seed(0)
    z = (torch.randn(16, 10, dtype=torch.float64) * 5).requires_grad_(True)
    y = torch.randint(0, 10, (16,))
    for T in (0.5, 1.0, 5.0, 50.0):
        (g,) = torch.autograd.grad(temperature_loss(z, y, T) * len(y), z)
        expected = (torch.softmax(z.detach().float() / T, 1) - torch.nn.functional.one_hot(y, 10)) / T
        torch.testing.assert_close(g.float(), expected, atol=1e-6, rtol=1e-5)


def test_lr_scale_removes_the_one_over_T():
    torch.manual_seed(1)
    z = torch.randn(8, 10).requires_grad_(True)
    y = torch.randint(0, 10, (8,))
    T = 20.0
    (g,) = torch.autograd.grad(temperature_loss(z, y, T, lr_scale=True) * len(y), z)
    expected = torch.softmax(z.detach() / T, 1) - torch.nn.functional.one_hot(y, 10)
    torch.testing.assert_close(g, expected, atol=1e-6, rtol=1e-5)
    # the step size matches T=1; the direction is that of z/T, not of z
    assert not torch.allclose(expected, torch.softmax(z.detach(), 1) - torch.nn.functional.one_hot(y, 10), atol=1e-2)
