"""The attacks torchattacks lacks (a loss hook for PGD, a radius for CW) or gets wrong (CW's margin
and box, PGD-L2 on channels_last models), and the early-stopped ascent the PGDs share. The registry
(registry.py) builds them and says what each is; this module is imported when one is built."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchattacks


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image, max_{i != y} z_i - z_y: positive exactly when the image is misclassified."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return others - own


def early_stopped_ascent(images, labels, targets, adv, steps, grad_of, step, logits_of):
    """The early-stopped loop LossPGD and PGDL2 share: from the start ``adv``, each point leaves
    at its first misclassified iterate (targeted, ``targets`` given: at its first iterate in the
    target class), or at an exactly zero gradient (whose step is zero, so every later iterate is
    this one); the rest come back at their last iterate. ``grad_of(adv, y, t)`` gives (logits,
    input gradient) on the points still attacked, ``step(adv, x, grad)`` the next iterate,
    projected and clamped, ``logits_of(adv)`` the logits alone (used when targeted).

    What comes back per point: the iterate that hit its target (the last one included, checked
    with one more forward pass), else its first misclassified iterate, else the one it left at.
    A targeted attack goes on past a misclassification (the target is what it is judged by), but
    the point still counts as broken by the first iterate that misclassified it, so robust
    accuracy is what stopping there would give."""
    out = adv.clone()
    broken = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    live = torch.arange(len(images), device=images.device)  # the points still attacked
    x, y, t = images, labels, targets
    for _ in range(steps):
        adv.requires_grad = True
        logits, grad = grad_of(adv, y, t)
        adv = adv.detach()
        pred = logits.detach().argmax(1)
        wrong = pred != y
        if t is not None:
            first = wrong & ~broken[live]  # a misclassification to keep while the target is sought
            if first.any():
                out[live[first]] = adv[first]
                broken[live[first]] = True
            hit = pred == t
        else:
            hit = wrong
        done = hit | (grad.flatten(1) == 0).all(1)
        if done.any():
            take = hit | ~broken[live]  # a zero gradient after a misclassification keeps that one
            out[live[done & take]] = adv[done & take]
            keep = ~done
            live, adv, x, y, grad = live[keep], adv[keep], x[keep], y[keep], grad[keep]
            t = None if t is None else t[keep]
            if len(live) == 0:
                return out
        adv = step(adv, x, grad)
    last = ~broken[live]
    if t is not None and not last.all():
        # no step checked the last iterate: where it reached the target, it is the one to return
        pend = ~last
        with torch.no_grad():
            last[pend] = logits_of(adv[pend]).argmax(1) == t[pend]
    out[live[last]] = adv[last]
    return out


class LossPGD(torchattacks.PGD):
    """torchattacks.PGD with its loss as a method, and an early stop.

    Without the early stop, ``forward`` is torchattacks.PGD.forward line for line (3.5.1) except
    for the cost, because there the CE loss is a local of ``forward`` and cannot be overridden
    alone, and a random start drawn in float32 for float64 images; step, projection, clamping,
    targeted modes and the model-mode handling stay torchattacks'. tests/test_attack_suite.py checks that this class with the CE cost gives
    torchattacks.PGD's output bit for bit one image at a time (where the sum is the mean).

    With ``early_stop`` (as AutoAttack's APGD does), each point leaves the batch at the first
    iterate that is misclassified, and that iterate is what comes back for it; the points left
    come back at their final iterate. A targeted one leaves at its first iterate in the target
    class instead, and comes back as its first misclassified iterate where it never reached it
    (early_stopped_ascent). A point therefore counts as robust only if no iterate broke
    it: never weaker than the final iterate alone, at a fraction of the passes where most points
    fall in a few steps. A point whose input gradient is exactly zero also leaves: a sign step of
    zero does not move it, so every later iterate is this one (the fixed point a saturated softmax
    makes, where the plain loop spends all its steps for nothing). The random start and the targets
    are the plain loop's.

    The loss is summed over the batch, not averaged as torchattacks does: on a saturated softmax
    a point's CE gradient is near float32's smallest value, and torchattacks' division by the
    batch size flushes it to exactly zero, so the point stops moving and counts as robust. Which
    points do depended on the batch size (fastnet_T50, PGD-10 raw from the clean point, 300
    images: 43.3% robust one image a batch, 45.7% in one batch of 300); summed, each point's
    gradient is its own (the random start is still drawn per batch, as the evaluator seeds it).
    The sign step drops the scale, so elsewhere nothing changes."""

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True, early_stop=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.early_stop = early_stop

    def get_target_label(self, inputs, labels=None):
        """torchattacks' targets, kept (``last_targets``) for the evaluator to count the hits."""
        self.last_targets = super().get_target_label(inputs, labels)
        return self.last_targets

    def uniform_start(self, images):
        """torchattacks' uniform random start, drawn in float32 whatever the images' precision: a
        float64 draw gives other numbers from the same seed, and the fp64 check's two runs must
        start from the same points for their gap to be the precision's alone."""
        return torch.empty_like(images, dtype=torch.float32).uniform_(-self.eps, self.eps).to(images.dtype)

    def losses(self, logits, labels, target_labels):
        """The loss of each image, ascended by the attack."""
        if self.targeted:
            return -F.cross_entropy(logits, target_labels, reduction="none")
        return F.cross_entropy(logits, labels, reduction="none")

    def cost(self, logits, labels, target_labels):
        """The batch loss: the sum of the images' losses (each point's gradient its own)."""
        return self.losses(logits, labels, target_labels).sum()

    def forward(self, images, labels):
        if self.early_stop:
            return self._forward_early_stop(images, labels)
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)

        target_labels = self.get_target_label(images, labels) if self.targeted else None

        adv_images = images.clone().detach()

        if self.random_start:
            adv_images = adv_images + self.uniform_start(adv_images)
            adv_images = torch.clamp(adv_images, min=0, max=1).detach()

        for _ in range(self.steps):
            adv_images.requires_grad = True
            outputs = self.get_logits(adv_images)
            cost = self.cost(outputs, labels, target_labels)
            grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]

            adv_images = adv_images.detach() + self.alpha * grad.sign()
            delta = torch.clamp(adv_images - images, min=-self.eps, max=self.eps)
            adv_images = torch.clamp(images + delta, min=0, max=1).detach()

        return adv_images

    def _forward_early_stop(self, images, labels):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target_labels = self.get_target_label(images, labels) if self.targeted else None
        adv = images.clone().detach()
        if self.random_start:
            adv = adv + self.uniform_start(adv)
            adv = torch.clamp(adv, min=0, max=1).detach()

        def grad_of(adv, y, t):
            logits = self.get_logits(adv)
            return logits, torch.autograd.grad(self.cost(logits, y, t), adv)[0]

        def step(adv, x, grad):
            delta = torch.clamp(adv + self.alpha * grad.sign() - x, min=-self.eps, max=self.eps)
            return torch.clamp(x + delta, min=0, max=1).detach()

        return early_stopped_ascent(images, labels, target_labels, adv, self.steps, grad_of, step, self.get_logits)


class MarginPGD(LossPGD):
    """PGD-Linf ascending the CW margin max_{i != y} z_i - z_y (targeted: descending
    max_{i != t} z_i - z_t). With signed steps, dividing the logits by T changes nothing."""

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=20, random_start=True, early_stop=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start,
                         early_stop=early_stop)
        self.attack = "MarginPGD"

    def losses(self, logits, labels, target_labels):
        if self.targeted:
            return -margin(logits, target_labels)
        return margin(logits, labels)



class RadiusCW(torchattacks.CW):
    """torchattacks.CW (L2, fixed c, Adam, no binary search over c), read at an L2 radius.

    CW is a minimal-perturbation attack: it has no radius and returns, per image, the smallest
    misclassifying perturbation it found (the clean image when it found none). To report robust
    accuracy at radius eps, a perturbation longer than eps counts as a failed attack: that image
    comes back clean. Robust accuracy is then non-increasing in eps for the same run.

    Two departures from torchattacks 3.5.1, both restoring Carlini and Wagner's own code:
    * its ``f`` masks with ``(1 - one_hot) * logits`` and takes a max, which reads a 0 for the
      true class's slot; with negative logits that 0 wins, the margin is wrong and the attack can
      stall (e.g. z = (-1, -2, -3): torchattacks' margin is 0, the true one 1). On the tiny
      test model with every logit lowered by 10 (nothing else changes), torchattacks' CW fools
      no image at all. ``f`` is recomputed with a -inf mask;
    * its ``atanh`` of pixels at exactly 0 or 1 is +-inf, where tanh has zero gradient: those
      pixels can never move. The original scales by 0.999999 before atanh, as done here.
    """

    def __init__(self, model, eps=0.5, c=1.0, kappa=0.0, steps=100, lr=0.01):
        super().__init__(model, c=c, kappa=kappa, steps=steps, lr=lr)
        self.attack = "CW-L2"
        self.eps = eps

    def inverse_tanh_space(self, x):
        return torch.atanh(torch.clamp(x * 2 - 1, min=-1, max=1) * 0.999999)

    def f(self, outputs, labels):
        m = margin(outputs, labels)  # max_{i != labels} z_i - z_labels
        if self.targeted:
            return torch.clamp(m, min=-self.kappa)
        return torch.clamp(-m, min=-self.kappa)

    def forward(self, images, labels):
        adv = super().forward(images, labels)
        images = images.to(adv.device)
        too_far = (adv - images).flatten(1).norm(dim=1) > self.eps
        return torch.where(too_far[:, None, None, None], images, adv)


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands back the gradient in the default (NCHW) layout."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class PGDL2(torchattacks.PGDL2):
    """torchattacks.PGDL2 on the harness's channels_last models, with LossPGD's early stop.

    Through those models the input gradient comes back channels_last, and torchattacks 3.5.1
    flattens it with ``.view``, which raises on that layout; the gradient is made contiguous on
    its way out of the model. With ``early_stop`` each point leaves at its first misclassified
    iterate (or a zero gradient, whose normalised step is zero), as in LossPGD; the random start,
    the normalised step and the projection onto the L2 ball are torchattacks' line for line, the
    loss summed over the batch as in LossPGD."""

    def __init__(self, model, eps=0.5, alpha=0.1, steps=10, random_start=True, early_stop=False):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.early_stop = early_stop

    def get_logits(self, inputs, labels=None, *args, **kwargs):
        return super().get_logits(_ContiguousGrad.apply(inputs), labels, *args, **kwargs)

    def forward(self, images, labels):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target_labels = self.get_target_label(images, labels) if self.targeted else None
        adv = images.clone().detach()
        if self.random_start:
            delta = torch.empty_like(adv).normal_()
            n = delta.view(adv.size(0), -1).norm(p=2, dim=1).view(adv.size(0), 1, 1, 1)
            r = torch.zeros_like(n).uniform_(0, 1)
            delta *= r / n * self.eps
            adv = torch.clamp(adv + delta, min=0, max=1).detach()

        def grad_of(adv, y, t):
            logits = self.get_logits(adv)
            losses = -F.cross_entropy(logits, t, reduction="none") if self.targeted else \
                F.cross_entropy(logits, y, reduction="none")
            return logits, torch.autograd.grad(losses.sum(), adv)[0]  # summed, as LossPGD

        def step(adv, x, grad):
            # A saturated softmax's CE gradient can be 1e-30 without being zero: against the norm's
            # 1e-10 guard its normalised step is ~0, the point stays and counts as robust (8 pp
            # too many at a last layer x 80). Such gradients are scaled to a peak of 1 first; the
            # rest keep torchattacks' arithmetic (and its rounding, bit for bit).
            flat = grad.flatten(1)
            peak = flat.abs().amax(1)
            tiny = (peak > 0) & (flat.norm(p=2, dim=1) < 1e-6)
            if tiny.any():
                grad = torch.where(tiny.view(-1, 1, 1, 1), grad / peak.clamp_min(1e-38).view(-1, 1, 1, 1), grad)
            grad_norms = grad.flatten(1).norm(p=2, dim=1) + self.eps_for_division
            delta = adv + self.alpha * (grad / grad_norms.view(-1, 1, 1, 1)) - x  # torchattacks' rounding
            factor = torch.clamp(self.eps / delta.flatten(1).norm(p=2, dim=1), max=1.0)
            return torch.clamp(x + delta * factor.view(-1, 1, 1, 1), min=0, max=1).detach()

        if not self.early_stop:  # torchattacks' loop, the loss summed
            for _ in range(self.steps):
                adv.requires_grad = True
                grad = grad_of(adv, labels, target_labels)[1]
                adv = step(adv.detach(), images, grad)
            return adv
        return early_stopped_ascent(images, labels, target_labels, adv, self.steps, grad_of, step, self.get_logits)
