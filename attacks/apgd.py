"""APGD and APGD-T (Croce and Hein 2020) whose points leave the batch once broken.

torchattacks' APGD already counts a point as broken if any iterate misclassified it (``acc`` is a
running minimum, ``x_best_adv`` keeps a misclassified iterate), but it keeps attacking that point
to the last of its 100 iterations: on a standard model, where nearly every point falls in a step
or two, that is ~98% of APGD-T's passes spent on points already decided. Here a point leaves at
its first misclassified iterate, which comes back for it.

Why that changes no result: for the Linf norm every quantity of an APGD run is per point (the
random start is drawn once for the whole batch before the first step; the step size, momentum,
best loss, and the oscillation and no-improvement checks are kept point by point; the loss is a
sum over points), so a point's trajectory does not depend on which other points are still in the
batch. The same points are broken at the same iterates, and the perturb loop around the run
(restarts, target classes) sees the same ``acc``. tests/test_apgd.py checks it image by image
against torchattacks on a real model. Only the iterate returned for a broken point differs: the
first misclassified one instead of the last, both misclassified. (L2 is left to torchattacks:
its APGD-T takes every point's step length from the batch's first point.)

The loop below is torchattacks 3.5.1's ``attack_single_run`` (Linf, same operations in the same
order) on the points still attacked.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torchattacks


class _EarlyStopRun:
    """``attack_single_run`` for APGD and APGD-T where the points already broken leave."""

    def _aux(self, x):
        """Per-point data the loss needs beyond the labels (APGD-T: its target class)."""
        return None

    def _loss(self, logits, y, aux):
        raise NotImplementedError

    def attack_single_run(self, x_in, y_in):
        if self.norm != "Linf":
            return super().attack_single_run(x_in, y_in)
        x = x_in.clone() if len(x_in.shape) == 4 else x_in.clone().unsqueeze(0)
        y = y_in.clone() if len(y_in.shape) == 1 else y_in.clone().unsqueeze(0)
        n = x.shape[0]
        self.steps_2, self.steps_min, self.size_decr = (
            max(int(0.22 * self.steps), 1), max(int(0.06 * self.steps), 1), max(int(0.03 * self.steps), 1))

        t = 2 * torch.rand(x.shape).to(self.device).detach() - 1
        x_adv = x.detach() + self.eps * torch.ones([n, 1, 1, 1]).to(self.device).detach() * t / (
            t.reshape([t.shape[0], -1]).abs().max(dim=1, keepdim=True)[0].reshape([-1, 1, 1, 1]))
        x_adv = x_adv.clamp(0.0, 1.0)
        aux = self._aux(x)

        # the whole batch's results; a point's row is written when it leaves, the rest at the end
        out_best, out_adv = x_adv.clone(), x_adv.clone()
        out_acc = torch.zeros(n, dtype=torch.bool, device=x.device)
        out_loss = torch.zeros(n, device=x.device)

        x_best, x_best_adv = x_adv.clone(), x_adv.clone()
        loss_steps = torch.zeros([self.steps, n])
        logits, loss_indiv, grad = self._grad(x_adv, y, aux)
        grad_best = grad.clone()
        acc = logits.detach().max(1)[1] == y
        loss_best = loss_indiv.detach().clone()
        step_size = (self.eps * torch.ones([n, 1, 1, 1]).to(self.device).detach()
                     * torch.Tensor([2.0]).to(self.device).detach().reshape([1, 1, 1, 1]))
        x_adv_old = x_adv.clone()
        k = self.steps_2 + 0
        counter3 = 0
        loss_best_last_check = loss_best.clone()
        reduced_last_check = np.ones(n, dtype=bool)
        live = torch.arange(n, device=x.device)  # batch positions of the points still attacked

        for i in range(-1, self.steps):
            if i >= 0:
                with torch.no_grad():
                    grad2 = x_adv - x_adv_old
                    x_adv_old = x_adv.clone()
                    a = 0.75 if i > 0 else 1.0
                    x_adv_1 = x_adv + step_size * torch.sign(grad)
                    x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, x - self.eps), x + self.eps), 0.0, 1.0)
                    x_adv = torch.clamp(torch.min(torch.max(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a),
                                                            x - self.eps), x + self.eps), 0.0, 1.0) + 0.0

                logits, loss_indiv, grad = self._grad(x_adv, y, aux)
                pred = logits.detach().max(1)[1] == y
                acc = torch.min(acc, pred)
                x_best_adv[~pred] = x_adv[~pred] + 0.0

                with torch.no_grad():
                    y1 = loss_indiv.detach().clone()
                    loss_steps[i] = y1.cpu() + 0
                    better = y1 > loss_best
                    x_best[better] = x_adv[better].clone()
                    grad_best[better] = grad[better].clone()
                    loss_best[better] = y1[better] + 0
                    counter3 += 1
                    if counter3 == k:
                        fl_oscillation = self.check_oscillation(loss_steps.detach().cpu().numpy(), i, k,
                                                                loss_best.detach().cpu().numpy(), k3=self.thr_decr)
                        fl_reduce_no_impr = (~reduced_last_check) * (
                            loss_best_last_check.cpu().numpy() >= loss_best.cpu().numpy())
                        fl_oscillation = ~(~fl_oscillation * ~fl_reduce_no_impr)
                        reduced_last_check = np.copy(fl_oscillation)
                        loss_best_last_check = loss_best.clone()
                        if np.sum(fl_oscillation) > 0:
                            back = torch.from_numpy(fl_oscillation).to(x.device)
                            step_size[back] /= 2.0
                            x_adv[back] = x_best[back].clone()
                            grad[back] = grad_best[back].clone()
                        counter3 = 0
                        k = np.maximum(k - self.size_decr, self.steps_min)

            done = ~acc
            if done.any():
                gone = live[done]
                out_best[gone], out_adv[gone], out_loss[gone] = x_best[done], x_best_adv[done], loss_best[done]
                keep = acc
                keep_np = keep.cpu().numpy()
                live, x, y = live[keep], x[keep], y[keep]
                aux = None if aux is None else aux[keep]
                x_adv, x_adv_old, grad, grad_best = x_adv[keep], x_adv_old[keep], grad[keep], grad_best[keep]
                x_best, x_best_adv, step_size = x_best[keep], x_best_adv[keep], step_size[keep]
                loss_best, loss_best_last_check = loss_best[keep], loss_best_last_check[keep]
                loss_steps, reduced_last_check = loss_steps[:, keep.cpu()], reduced_last_check[keep_np]
                acc = acc[keep]
                if len(live) == 0:
                    break

        out_best[live], out_adv[live], out_loss[live] = x_best, x_best_adv, loss_best
        out_acc[live] = acc
        return out_best, out_acc, out_loss, out_adv

    def _grad(self, x_adv, y, aux):
        """logits, per-point loss and the input gradient at ``x_adv`` (averaged over eot_iter)."""
        x_adv = x_adv.detach().requires_grad_()
        grad = torch.zeros_like(x_adv)
        for _ in range(self.eot_iter):
            with torch.enable_grad():
                logits = self.get_logits(x_adv)
                loss_indiv = self._loss(logits, y, aux)
                loss = loss_indiv.sum()
            grad += torch.autograd.grad(loss, [x_adv])[0].detach()
        grad /= float(self.eot_iter)
        return logits, loss_indiv, grad


class APGD(_EarlyStopRun, torchattacks.APGD):
    """torchattacks.APGD (CE or DLR loss, Linf: AutoAttack's APGD-CE; defaults and shapes are
    torchattacks') with each point leaving at its first misclassified iterate."""

    def _loss(self, logits, y, aux):
        if self.loss == "ce":
            return nn.CrossEntropyLoss(reduction="none")(logits, y)
        if self.loss == "dlr":
            return self.dlr_loss(logits, y)
        raise ValueError("unknown loss")


class APGDT(_EarlyStopRun, torchattacks.APGDT):
    """torchattacks.APGDT (targeted DLR toward each of the top wrong classes, Linf: AutoAttack's
    APGD-T) with each point leaving at its first misclassified iterate."""

    def _aux(self, x):
        return self.get_logits(x).sort(dim=1)[1][:, -self.target_class]

    def _loss(self, logits, y, aux):
        return self.dlr_loss_targeted(logits, y, aux)
