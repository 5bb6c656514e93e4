"""Real torchattacks attacks on a tiny model trained here."""

import pytest
import torch

from attacks import make_attack, parse_eps
from bench.data import stratified_indices
from bench.errors import BenchError
from bench.measure.adversarial import evaluate
from bench.tools.selfcheck import scaled_last_layer


@pytest.fixture(scope="module")
def test_split(mini_data):
    return mini_data.test.subset(stratified_indices(mini_data.test.labels, 200, 0))


def by(ms, threat, view):
    return next(m for m in ms if m.threat == threat and m.view == view)


def test_pgd_beats_fgsm_beats_clean(tiny_model, test_split):
    spec, model = tiny_model
    ms = evaluate(model, spec.T, test_split, [make_attack("fgsm"), make_attack("pgd")], ["raw", "scaled"],
                  batch_size=100)
    clean = ms[0].metrics["accuracy"]
    assert ms[0].threat == "clean" and clean > 0.25  # the tiny model learned something
    for view in ("raw", "scaled"):
        fgsm, pgd = by(ms, "fgsm", view).metrics, by(ms, "pgd", view).metrics
        assert fgsm["robust_acc"] < clean
        assert pgd["robust_acc"] <= fgsm["robust_acc"]
        assert pgd["max_linf"] <= 8 / 255 + 1e-6
        assert fgsm["success_rate"] == pytest.approx(1 - fgsm["robust_acc"] / clean)
        assert pgd["clean_acc"] == clean
    # at T=1 the two views are the same function
    assert by(ms, "pgd", "raw").metrics == by(ms, "pgd", "scaled").metrics


def test_evaluation_is_seeded(tiny_model, test_split):
    spec, model = tiny_model
    a = evaluate(model, 1.0, test_split, [make_attack("pgd", {"steps": 3})], ["raw"], batch_size=100, seed=0)
    b = evaluate(model, 1.0, test_split, [make_attack("pgd", {"steps": 3})], ["raw"], batch_size=100, seed=0)
    assert [m.metrics for m in a] == [m.metrics for m in b]


def test_saturated_softmax_masks_ce_pgd_on_the_raw_view(tiny_model, test_split):
    """science.md's known answer: scale the last layer by 1e3. Decisions are unchanged, the raw
    softmax saturates, CE gradients vanish and raw-view PGD "finds" robustness; the scaled view
    (z / 1e3: the original model) does not."""
    spec, model = tiny_model
    big = scaled_last_layer(model, 1e3)
    ms = evaluate(big, 1e3, test_split, [make_attack("pgd")], ["raw", "scaled"], batch_size=100)
    ref = evaluate(model, 1.0, test_split, [make_attack("pgd")], ["raw"], batch_size=100)
    assert ms[0].metrics["accuracy"] == ref[0].metrics["accuracy"]
    raw, scaled = by(ms, "pgd", "raw").metrics, by(ms, "pgd", "scaled").metrics
    assert raw["saturated_frac"] > 0.5 and raw["zero_grad_frac"] > 0.3
    assert scaled["saturated_frac"] == 0 and scaled["zero_grad_frac"] == 0
    assert raw["robust_acc"] > scaled["robust_acc"] + 0.1
    assert scaled["robust_acc"] == pytest.approx(by(ref, "pgd", "raw").metrics["robust_acc"], abs=0.05)


@pytest.mark.parametrize("value,expected", [("8/255", 8 / 255), ("0.5", 0.5), (0.25, 0.25), ("0", 0.0),
                                            ("0.5/255", 0.5 / 255), (" 1e-3/2 ", 0.0005)])
def test_parse_eps(value, expected):
    assert parse_eps(value) == pytest.approx(expected)
    if value == "8/255":
        assert parse_eps(value) == 8 / 255  # exactly: the same float as the division, so keys do not move


@pytest.mark.parametrize("name,params,fragment", [
    ("pgd", {"eps": "-1/255"}, "non-negative"),
    ("pgd", {"eps": "nan"}, "finite"),
    ("pgd", {"eps": "eight"}, "cannot read"),
    ("pgd", {"eps": "1/2/3"}, "cannot read"),
    ("pgd", {"alpha": "0.5/0"}, "cannot read"),
    ("pgd", {"steps": 0}, ">= 1"),
    ("pgd", {"steps": "2.5"}, "whole number"),
    ("pgd", {"alpha": 0}, "positive"),
    ("pgm", {}, "did you mean pgd"),
])
def test_bad_attack_parameters(name, params, fragment):
    with pytest.raises(BenchError, match=fragment):
        make_attack(name, params)


def test_the_registry_imports_no_attack_until_one_is_built():
    """As timm's registry imports no model file: what reads the attack registry alone (the
    reports, the checkpoint store, a profile's checks, the CLI's parser) loads neither
    torchattacks nor scipy nor the attack classes; building an attack does."""
    import subprocess
    import sys
    probe = ("import sys, bench.report.publish, bench.checkpoints, bench.profiles, bench.cli\n"
             "from attacks import ATTACKS, make_attack\n"
             "heavy = ('torchattacks', 'scipy', 'attacks.adversarial', 'attacks.apgd')\n"
             "print(sorted(m for m in heavy if m in sys.modules))\n"
             "make_attack('pgd').build(__import__('torch').nn.Linear(3, 10))\n"
             "print(sorted(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.splitlines()
    assert before == "[]"
    assert "'torchattacks'" in after and "'attacks.adversarial'" in after


class _FixedFunction(torch.nn.Module):
    """A classifier with no parameters (and no buffers): a fixed function of its input."""

    def forward(self, x):
        return x.flatten(1)[:, :10] * 5


@pytest.mark.parametrize("name, params", [
    ("pgd", {"steps": 3}), ("fgsm", {}), ("apgd_ce", {"steps": 3}), ("square", {"n_queries": 5}),
    ("autoattack_ref", {"steps": 3, "n_queries": 5}),
])
def test_a_model_without_parameters_is_attacked_without_a_word_on_stdout(name, params, capsys):
    # torchattacks printed "Failed to set device automatically" into the run's table, and the
    # authors' AutoAttack raised StopIteration, both from next(model.parameters())
    if name == "autoattack_ref":
        pytest.importorskip("pyautoattack")
    x, y = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    atk = make_attack(name, params).build(_FixedFunction(), n_classes=10, seed=0)
    adv = atk(x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert capsys.readouterr().out == ""
