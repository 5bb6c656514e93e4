"""The attack suite: every registered attack, real torchattacks / pyautoattack code on the tiny
model trained by conftest (no mocks). Budgets are cut (3-10 steps, 100 queries) so the file runs
in well under a minute on 2 CPU cores; the properties checked do not need full budgets."""
import copy
import sys

import pytest
import torch
import torchattacks

from attacks import ATTACKS, make_attack, make_view, parse_eps
from attacks.adversarial import LossPGD, RadiusCW, margin
from attacks.views import TemperatureView
from bench.data import to_float
from bench.errors import BenchError
from bench.measure.adversarial import evaluate
from bench.tools.selfcheck import scaled_last_layer
from tests.attack_helpers import correct, run

FAST = {"steps": 3, "n_queries": 100}
INVARIANT = {"pgd_margin", "apgd_dlr", "apgd_t", "fab_t", "square"}


def fast(name, **extra):
    """The attack with cut budgets (only the parameters it has)."""
    params = {**FAST, **extra}
    return make_attack(name, {k: v for k, v in params.items() if k in ATTACKS[name].params})


@pytest.fixture(scope="module")
def batch(tiny_model, test_split):
    """48 test images the tiny model classifies correctly: what the evaluator attacks."""
    _, model = tiny_model
    x, y = to_float(test_split.images), test_split.labels
    ok = correct(model, x, y)
    assert ok.sum() >= 48
    return x[ok][:48], y[ok][:48]


@pytest.fixture(scope="module")
def saturated(tiny_model, test_split):
    """science.md's known answer: the last layer times 1e3. Decisions unchanged, the raw softmax
    saturated, CE gradients gone; the scaled view (T = 1e3) is the original model again."""
    _, model = tiny_model
    big = scaled_last_layer(model, 1e3)
    x, y = to_float(test_split.images), test_split.labels
    ok = correct(big, x, y)
    assert torch.equal(ok, correct(model, x, y))
    x, y = x[ok][:48], y[ok][:48]
    with torch.no_grad():
        assert (torch.softmax(big(x), 1).amax(1) == 1.0).float().mean() > 0.9
    return big, x, y


def test_registry_metadata():
    for name, info in ATTACKS.items():
        assert info.description
        cfg = make_attack(name)
        assert set(cfg.kwargs) == set(info.params)  # every default passes its own check
        # a config's resolved values given back as overrides (as numbers, or as the strings of a
        # command line) resolve to the same config: the identity a resumed run matches records on
        assert make_attack(name, cfg.kwargs) == cfg
        assert make_attack(name, {k: str(v) for k, v in cfg.kwargs.items()}) == cfg
    assert {n for n, i in ATTACKS.items() if i.view_invariant} == INVARIANT
    assert {n for n, i in ATTACKS.items() if i.black_box} == {"square"}
    assert {n for n, i in ATTACKS.items() if i.norm == "l2"} == {"pgd_l2", "cw_l2"}
    assert make_attack("pgd").steps == 20  # PGD-20
    assert make_attack("autoattack").kwargs == {"eps": 8 / 255, "version": "standard", "steps": 100,
                                                "n_queries": 5000}


@pytest.mark.parametrize("view", ["raw", "scaled"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_respects_its_threat_model(tiny_model, batch, name, view):
    """Inside the ball (Linf, or L2 per image), inside [0,1], and it attacks something; the model
    comes back in eval mode with its BatchNorm statistics untouched."""
    _, model = tiny_model
    x, y = batch[0][:24], batch[1][:24]
    info = ATTACKS[name]
    eps = 4 / 255 if info.norm == "linf" else 0.25  # not the defaults: eps must reach the attack
    before = {k: v.clone() for k, v in model.state_dict().items()}
    atk = fast(name, eps=eps).build(make_view(model, view, 5.0))  # build(view): the old signature
    adv = run(atk, x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if info.norm == "linf" else d.norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert size.max() >= (1e-3 if name == "cw_l2" else eps / 2)  # it moved (CW: as little as it can)
    assert correct(model, adv, y).sum() < len(y)  # it attacked something
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_seeding_is_as_declared(tiny_model, batch, name):
    """"none": no randomness; "global": the caller's seed decides; "own": the build seed decides,
    whatever the caller seeded."""
    _, model = tiny_model
    x, y = batch[0][:8], batch[1][:8]
    cfg = fast(name)
    a, b, c = (run(cfg.build(model, seed=s), x, y, seed=g) for s, g in ((0, 0), (0, 1), (1, 0)))
    seeding = ATTACKS[name].seeding
    if seeding == "global":
        assert not torch.equal(a, b) and torch.equal(a, c)
    else:
        assert torch.equal(a, b)
        if seeding == "none":
            assert torch.equal(a, c)


def test_a_view_takes_the_mode_of_its_model(tiny_model):
    """torchattacks puts back the mode of the module it is given: a view in train mode would
    leave the wrapped model training after the first attack (found while writing this file)."""
    _, model = tiny_model
    assert not make_view(model, "scaled", 5.0).training
    trainable = copy.deepcopy(model).train()
    assert TemperatureView(trainable, 5.0).training


@pytest.mark.parametrize("targeted", [False, True])
def test_loss_pgd_is_torchattacks_pgd_with_a_loss_hook(tiny_model, batch, targeted):
    """LossPGD copies torchattacks.PGD.forward to expose the loss: with CE it must be PGD, bit for
    bit where its summed loss is torchattacks' mean (one image at a time)."""
    _, model = tiny_model
    x, y = batch
    ours = LossPGD(model, eps=8 / 255, alpha=2 / 255, steps=3, random_start=True)
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=3, random_start=True)
    if targeted:
        for atk in (ours, theirs):
            atk.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10, quiet=True)
    for i in range(0, len(y), 6):
        assert torch.equal(run(ours, x[i:i + 1], y[i:i + 1]), run(theirs, x[i:i + 1], y[i:i + 1]))


def test_pgd_l2_runs_on_channels_last_models(tiny_model, batch):
    """The harness keeps models channels_last; stock torchattacks.PGDL2 cannot flatten the input
    gradient that comes back (if a release fixes that, attacks.adversarial.PGDL2 can go)."""
    _, model = tiny_model
    x, y = batch
    assert any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())  # channels_last convs
    with pytest.raises(RuntimeError, match="view size"):
        torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=1)(x, y)
    adv = run(make_attack("pgd_l2", {"steps": 1}).build(model), x, y)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5


def test_margin_loss():
    z = torch.tensor([[-1.0, -2.0, -3.0], [0.5, 2.0, 1.0]])
    assert margin(z, torch.tensor([0, 1])).tolist() == [-1.0, -1.0]
    assert margin(z, torch.tensor([2, 0])).tolist() == [2.0, 1.5]


def test_cw_fixes(tiny_model):
    """The two departures of RadiusCW from torchattacks.CW (see its docstring)."""
    _, model = tiny_model
    z, y = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([0])
    assert torchattacks.CW(model).f(z, y).item() == 0.0  # torchattacks: the true margin 1 reads as 0
    assert RadiusCW(model).f(z, y).item() == 1.0
    edge = torch.tensor([0.0, 1.0, 0.5])
    w = RadiusCW(model).inverse_tanh_space(edge)
    assert torch.isfinite(w).all() and not torch.isfinite(torchattacks.CW(model).inverse_tanh_space(edge)).all()
    assert (RadiusCW(model).tanh_space(w) - edge).abs().max() < 1e-6


class Shifted(torch.nn.Module):
    """The model with every logit lowered by 10: softmax, decisions and margins unchanged."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x):
        return self.model(x) - 10


def test_cw_does_not_see_a_logit_shift(tiny_model, batch):
    """torchattacks' CW reads the margin wrong when logits are negative; ours reads margins only."""
    _, model = tiny_model
    x, y = batch
    cfg = fast("cw_l2", steps=10)
    plain, shifted = (int(correct(model, run(cfg.build(m), x, y), y).sum()) for m in (model, Shifted(model)))
    assert plain == shifted < len(y)
    stock = torchattacks.CW(Shifted(model), c=1, kappa=0, steps=10, lr=0.01)
    assert int(correct(model, run(stock, x, y), y).sum()) > plain  # what the fix is for


def test_cw_counts_only_perturbations_inside_the_radius(tiny_model, batch):
    """One CW run (deterministic), read at growing radii: every perturbation within its radius,
    and robust accuracy never higher at a larger radius."""
    _, model = tiny_model
    x, y = batch
    robust = []
    for eps in (0.1, 0.25, 0.5, 1.0):
        adv = run(fast("cw_l2", eps=eps, steps=10).build(model), x, y)
        assert (adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5
        robust.append(int(correct(model, adv, y).sum()))
    assert robust == sorted(robust, reverse=True) and robust[0] > robust[-1]


@pytest.mark.parametrize("name", ["pgd_target_random", "pgd_target_ll"])
@pytest.mark.parametrize("view", ["raw", "scaled"])
def test_targeted_attacks_hit_their_targets(tiny_model, batch, name, view):
    """The targets are read back from the attack itself: torchattacks draws them in
    get_target_label, first thing in PGD.forward, so the same seed gives the same targets
    (random); least-likely ones are checked against the view's own logits. Without the early
    stop: with it, a point leaves at its first misclassification, whether the target or not."""
    _, model = tiny_model
    x, y = batch
    v = make_view(model, view, 5.0)
    atk = make_attack(name, {"steps": 10, "eps": "16/255", "early_stop": False}).build(v)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        targets = atk.get_target_label(x, y)
        torch.manual_seed(3)
        adv = atk(x, y)
    assert (targets != y).all()
    if name == "pgd_target_ll":
        with torch.no_grad():
            z = v(x).masked_fill(torch.nn.functional.one_hot(y, 10).bool(), float("inf"))
        assert torch.equal(targets, z.argmin(1))
    else:
        assert targets.unique().numel() >= 5  # drawn, not a fixed map
    with torch.no_grad():
        hit = (model(adv).argmax(1) == targets).float().mean().item()
    assert hit > 2 / 9  # chance for a wrong class is 1/9


def test_invariant_attacks_see_through_a_saturated_softmax(saturated):
    """Every attack flagged view_invariant gives the same robust accuracy (within one image) on
    the raw and the scaled view of the 1e3 model; CE-PGD on the raw view is masked."""
    big, x, y = saturated
    robust = {}
    for name in ATTACKS:
        if ATTACKS[name].view_invariant or name == "pgd":
            for view in ("raw", "scaled"):
                atk = fast(name, steps=5).build(make_view(big, view, 1e3), n_classes=10, seed=0)
                adv = run(atk, x, y)
                robust[name, view] = int(correct(big, adv, y).sum())
    for name in INVARIANT:
        assert abs(robust[name, "raw"] - robust[name, "scaled"]) <= 1, (name, robust)
    n = len(y)
    assert robust["pgd", "raw"] > 0.8 * n  # masked: CE gradients underflow
    assert robust["pgd", "scaled"] < 0.5 * n
    for name in ("pgd_margin", "apgd_dlr"):
        assert robust["pgd", "raw"] - robust[name, "raw"] > 0.4 * n, robust


@pytest.mark.parametrize("eps", ["8/255", "2/255"])
def test_autoattack_agrees_with_the_reference(tiny_model, test_split, eps):
    """torchattacks' AutoAttack (set to the reference's iterations) against the authors' code, both
    through the evaluator on the same 100 test images. Their members agree to float rounding, so
    robust accuracy must agree within one image."""
    spec, model = tiny_model
    split = test_split.subset(torch.arange(100))
    params = {"eps": eps, "steps": 5, "n_queries": 100}
    ms = evaluate(model, spec.T, split, [make_attack("autoattack", params), make_attack("autoattack_ref", params)],
                  ["raw"], batch_size=100)
    clean = next(m for m in ms if m.threat == "clean").metrics["accuracy"]
    ta, ref = (next(m for m in ms if m.threat == name and m.view == "raw").metrics
               for name in ("autoattack", "autoattack_ref"))
    assert abs(ta["robust_acc"] - ref["robust_acc"]) <= 0.01
    assert ta["robust_acc"] < clean and ta["max_linf"] <= parse_eps(eps) + 1e-6
    assert ta["robust_acc"] > 0  # a comparison that means something


def test_autoattack_ref_keeps_quiet(tiny_model, batch, capsys, caplog):
    _, model = tiny_model
    x, y = batch
    atk = fast("autoattack_ref").build(model)
    run(atk, x[:8], y[:8])
    out = capsys.readouterr()
    assert out.out == "" and out.err == "" and not caplog.records
    assert isinstance(atk.last_warnings, list)


def test_autoattack_ref_without_its_package(tiny_model, monkeypatch):
    _, model = tiny_model
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import now raises ImportError
    with pytest.raises(BenchError, match="pip install pyautoattack"):
        make_attack("autoattack_ref").build(model)


@pytest.mark.parametrize("name,params,fragment", [
    ("square", {"n_queries": 0}, "n_queries must be >= 1"),
    ("square", {"n_queries": "1.5"}, "whole number"),
    ("square", {"n_restarts": True}, "whole number"),
    ("apgd_t", {"n_target_classes": -2}, ">= 1"),
    ("square", {"rescale_schedule": "maybe"}, "true or false"),
    ("square", {"p_init": 0}, "positive"),
    ("cw_l2", {"c": 0}, "c must be a positive"),
    ("cw_l2", {"kappa": -1}, "kappa must be a non-negative"),
    ("cw_l2", {"kappa": "inf"}, "finite"),
    ("cw_l2", {"lr": "fast"}, "cannot read"),
    ("cw_l2", {"lr": True}, "must be a number"),
    ("cw_l2", {"eps": "-0.5"}, "non-negative"),
    ("pgd_l2", {"alpha": 0}, "positive"),
    ("autoattack", {"version": "rand"}, "version must be one of standard, plus"),
    ("autoattack_ref", {"version": 3}, "version must be one of"),
    ("pgd_margn", {}, "did you mean pgd_margin"),
])
def test_bad_parameters(name, params, fragment):
    with pytest.raises(BenchError, match=fragment) as err:
        make_attack(name, params)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name,params,n_classes,fragment", [
    ("square", {"p_init": 1.5}, 10, "p_init .* at most 1"),
    ("apgd_t", {}, 3, "at least 4 classes"),
    ("fgsm", {}, 1, "at least 2 classes"),
])
def test_bad_values_found_at_build(tiny_model, name, params, n_classes, fragment):
    _, model = tiny_model
    with pytest.raises(BenchError, match=fragment):
        make_attack(name, params).build(model, n_classes=n_classes)


def test_fewer_classes_fewer_targets(tiny_model):
    _, model = tiny_model
    assert make_attack("apgd_t").build(model, n_classes=5).n_target_classes == 4
    assert make_attack("fab_t").build(model, n_classes=100).n_target_classes == 9
    members = make_attack("autoattack").build(model, n_classes=100, seed=7)._autoattack.attacks
    assert [type(a).__name__ for a in members] == ["APGD", "APGDT", "FAB", "Square"]
    assert [a.steps for a in members[:3]] == [100, 100, 100] and members[3].n_queries == 5000
    assert [a.n_target_classes for a in members[1:3]] == [9, 9] and {a.seed for a in members} == {7}


def test_an_attack_that_returns_nan_is_stopped(tiny_model, test_split, monkeypatch):
    """NaN fails every comparison, so it passed the ball and box checks, and a NaN image's argmax
    (class 0) counted its point robust wherever the label was 0."""
    from dataclasses import replace

    from bench.measure.adversarial import run_attack
    _, model = tiny_model
    info = replace(ATTACKS["fgsm"], name="nan_attack", build=lambda m, **kw: lambda x, y: torch.full_like(x, float("nan")))
    monkeypatch.setitem(ATTACKS, "nan_attack", info)
    ok = torch.ones(len(test_split), dtype=torch.bool)
    with pytest.raises(RuntimeError, match="left its threat model"):
        run_attack(model, 1.0, test_split, ok, make_attack("nan_attack"), "raw", 50, 0, 10)


def test_the_random_start_is_the_same_in_float64(batch):
    """The fp64 check runs CE-PGD on a float64 copy of the model with the seeds of the float32
    run: its random start must be the same points, or the gap between the two would include the
    draw's noise (a float64 uniform_ gives other numbers from the same seed)."""
    x, y = batch
    start = LossPGD(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)), eps=8 / 255, steps=0,
                    random_start=True)  # no step: the start alone
    x32, x64 = run(start, x, y), run(start, x.double(), y)
    assert x64.dtype == torch.float64 and (x64.float() - x32).abs().max() < 1e-7
    assert (x32 - x).abs().max() > 4 / 255  # a start was drawn
