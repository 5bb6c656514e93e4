"""Early-stopped APGD / APGD-T (attacks/apgd.py) against torchattacks' own, on the tiny model
trained by conftest: the same points broken, image by image, for fewer passes."""
import pytest
import torch
import torchattacks

from attacks import apgd, make_attack
from attacks.views import PassCount, PassCounter
from tests.attack_helpers import correct, run

EPS = 2 / 255  # some points survive: equal robust sets that are both empty would prove nothing
STEPS = 20


PAIRS = [
    ("apgd_ce", torchattacks.APGD, apgd.APGD, {"loss": "ce"}),
    ("apgd_dlr", torchattacks.APGD, apgd.APGD, {"loss": "dlr"}),
    ("apgd_t", torchattacks.APGDT, apgd.APGDT, {"n_classes": 10}),
]


@pytest.mark.parametrize("name,plain_cls,early_cls,extra", PAIRS, ids=[p[0] for p in PAIRS])
def test_early_stopped_apgd_breaks_the_same_points_for_fewer_passes(tiny_model, correct_batch, name, plain_cls, early_cls,
                                                                    extra):
    """Same seed: the robust points are torchattacks' exactly (each point's run does not depend
    on the others, so leaving changes nothing), the adversarial examples of the broken ones are
    misclassified, inside the ball and the box, and the early stop spends fewer backward passes."""
    _, model = tiny_model
    x, y = correct_batch
    out = []
    for cls in (plain_cls, early_cls):
        count = PassCount()
        atk = cls(PassCounter(model, count), norm="Linf", eps=EPS, steps=STEPS, n_restarts=1, seed=3, **extra)
        if name == "apgd_t":
            atk.n_target_classes = 3
        out.append((run(atk, x, y), count))
    (adv_p, c_plain), (adv_e, c_early) = out
    robust_p, robust_e = correct(model, adv_p, y), correct(model, adv_e, y)
    assert 0 < int(robust_p.sum()) < len(y)
    assert torch.equal(robust_e, robust_p)
    assert torch.equal(adv_e[robust_e], x[robust_e])  # an unbroken point comes back clean, as in torchattacks
    d = (adv_e - x).flatten(1).abs().amax(1)
    assert d.max() <= EPS + 1e-6 and adv_e.min() >= 0 and adv_e.max() <= 1
    assert c_early.backward < c_plain.backward


def test_the_registry_and_autoattack_run_the_early_stopped_apgd(tiny_model):
    _, model = tiny_model
    assert type(make_attack("apgd_t").build(model, n_classes=10)) is apgd.APGDT
    assert type(make_attack("apgd_ce").build(model, n_classes=10)) is apgd.APGD
    members = make_attack("autoattack").build(model, n_classes=10, seed=7)._autoattack.attacks
    assert [type(a) for a in members[:2]] == [apgd.APGD, apgd.APGDT]
    assert members[0].loss == "ce" and members[0].steps == 100 and members[1].n_target_classes == 9


def test_l2_is_left_to_torchattacks(tiny_model, correct_batch):
    """APGD-T's L2 step takes every point's length from the first point's: not per point, so
    there the subclass runs torchattacks' loop unchanged."""
    _, model = tiny_model
    x, y = correct_batch[0][:20], correct_batch[1][:20]
    adv = [run(cls(model, norm="L2", eps=0.1, steps=5, n_classes=10, seed=1), x, y)
           for cls in (torchattacks.APGDT, apgd.APGDT)]
    assert torch.equal(*adv)
