import math

import pytest
import torch

from bench.errors import BenchError
from models import ARCHS, build_model, parse_name


@pytest.mark.parametrize("name,canonical", [
    ("resnet18_T5", "resnet18_T5"),
    ("resnet18_T5.0", "resnet18_T5"),
    ("resnet18_T0.50", "resnet18_T0.5"),
    ("resnet18_bn_T11.7", "resnet18_bn_T11.7"),
    ("fastnet_T1_s2", "fastnet_T1_s2"),
    ("fastnet_T1_s0", "fastnet_T1"),
    ("fastnet_T1_std", "fastnet_T1"),
    ("fastnetw16_T1", "fastnet_T1"),  # the default width is left out
    ("fastnetw32_T50_lrT_s1", "fastnetw32_T50_lrT_s1"),
    ("vgg16_bn_T1", "vgg16_bn_T1"),  # an arch whose own name ends in _bn ...
    ("vgg16_bn_bn_T1", "vgg16_bn_bn_T1"),  # ... with the BN head as well
    ("wrn28_10_T1e1", "wrn28_10_T10"),
    ("resnet18_Tauto", "resnet18_Tauto"),
])
def test_round_trip(name, canonical):
    spec = parse_name(name)
    assert spec.name == canonical
    assert parse_name(spec.name) == spec


def test_spec_fields():
    s = parse_name("vgg16_bn_bn_T2.5_lrT_s3")
    assert (s.arch, s.bn_head, s.T, s.lr_scale, s.seed, s.regime) == ("vgg16_bn", True, 2.5, True, 3, "std")
    assert parse_name("vgg16_bn_T1").bn_head is False


def test_feature_dims_and_tauto():
    assert parse_name("resnet18_T1").feature_dim == 512
    assert parse_name("resnet18w16_T1").feature_dim == 128
    assert parse_name("wrn28_10_T1").feature_dim == 640
    assert parse_name("vit_small_T1").feature_dim == 384
    assert parse_name("fastnetw64_T1").feature_dim == 256
    # claim B: M=512 gives T* = 0.7239 * sqrt(512) - 4.706 ~ 11.67
    assert parse_name("resnet18_bn_Tauto").T == pytest.approx(0.7239 * math.sqrt(512) - 4.706, abs=1e-3)
    assert parse_name("fastnetw2_Tauto").T == pytest.approx(0.1)  # clipped below


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_builds_and_returns_logits(arch):
    # width variants keep tests fast; the full widths are exercised by their feature_dim
    name = {"resnet18": "resnet18w8", "preactresnet18": "preactresnet18w8", "vit_small": "vit_smallw48",
            "fastnet": "fastnetw8"}.get(arch, arch)
    spec = parse_name(f"{name}_bn_T3")
    model = build_model(spec).eval()
    with torch.no_grad():
        z = model(torch.rand(2, 3, 32, 32))
    assert z.shape == (2, 10)
    assert model.feature_dim == spec.feature_dim
    assert isinstance(model.head_bn, torch.nn.BatchNorm1d)
    assert model.fc.in_features == spec.feature_dim


@pytest.mark.parametrize("bad,fragment", [
    ("resnet81_T5", "nearest valid: resnet18_T5"),
    ("resnet18", "malformed"),
    ("resnet18_T", "expected _T<temperature>"),
    ("resnet18_T0", "positive"),
    ("resnet18_T-1", "expected _T<temperature>"),
    ("resnet18_Tnan", "expected _T<temperature>"),
    ("resnet18_T5_adversarial", "unexpected 'adversarial'"),
    ("resnet18_T5_s1_lrT", "unexpected"),
    ("vgg16_T1", "nearest valid"),
    ("resnet18x_T1", "malformed"),
    ("wrn28_10w4_T1", "no width variants"),
    ("fastnet_T05", "leading zero; write T5 or T0.5 as meant"),  # it was read as T=5 without a word
    ("vit_smallw128_T1", "vit_small widths are multiples of 6, got w128: e.g. w126 or w132"),  # an assert at training
])
def test_bad_names(bad, fragment):
    with pytest.raises(BenchError) as e:
        parse_name(bad)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


def test_suggestions_name_each_candidate_once():
    with pytest.raises(BenchError) as e:
        parse_name("fastnt_T1")
    near = str(e.value).split("nearest valid: ")[1].rstrip(")").split(", ")
    assert near[0] == "fastnet_T1" and len(near) == len(set(near)) > 1


@pytest.mark.parametrize("bad,fragment", [
    ("fastnet_T1\n_s2", "expected _T<temperature>"),  # '$' in a pattern also matches before a newline
    ("fastnet_T1_s2\n_lrT", "unexpected"),
    ("fastnet_T1_s99999999999999999999999", "seed must be a whole number in 0..4294967295"),
    ("fastnet_T1e290", "is 300 characters long"),
    ("fastnet_T1e-300", "characters long"),
])
def test_names_that_cannot_become_files_or_seeds(bad, fragment):
    with pytest.raises(BenchError, match=fragment.replace("(", r"\(")):
        parse_name(bad)


def test_long_but_valid_names_pass():
    assert parse_name("fastnet_T0.000000001").T == 1e-9
    assert parse_name("fastnet_T1_s4294967295").seed == 2 ** 32 - 1


def test_nan_and_inf_temperature_rejected():
    from models import ModelSpec
    for t in (float("nan"), float("inf"), -2.0, 0.0, "abc", True):
        with pytest.raises(BenchError):
            ModelSpec(arch="fastnet", temperature=t)


def test_tauto_formula_and_profile_corrections(tmp_path):
    from bench.profiles import load_profile
    from models.registry import TautoFormula
    assert parse_name("resnet18_bn_Tauto").T == pytest.approx(0.7239 * 512 ** 0.5 - 4.706, abs=1e-3)
    assert TautoFormula().resolve(4) == 0.1  # clipped below
    f = TautoFormula(gamma=2.0, delta=-1.0)
    assert f.resolve(512, csg=3.0, num_classes=10) == pytest.approx(11.674 + 2 * 1.0986 - 2.3026, abs=1e-3)
    with pytest.raises(BenchError, match="needs the dataset's CSG"):
        f.resolve(512)
    (tmp_path / "p.toml").write_text('[recipe]\nepochs = 1\n[tauto]\ngamma = 0.5\ncsg = 2.0\n')
    p = load_profile(str(tmp_path / "p.toml"))
    assert p.tauto.formula.gamma == 0.5 and p.tauto.csg == 2.0
    for bad, fragment in (('gamma = 0.5\n', "needs the dataset's csg"), ('csg = -1\n', "positive number"),
                          ('alpah = 1\n', "unknown key alpah")):
        (tmp_path / "b.toml").write_text('[recipe]\nepochs = 1\n[tauto]\n' + bad)
        with pytest.raises(BenchError, match=fragment):
            load_profile(str(tmp_path / "b.toml"))


def test_tauto_resolver_uses_the_profile(mini_data):
    from bench.profiles import TautoSetup
    from bench.grid.plan import TautoResolver
    spec = parse_name("fastnetw8_bn_Tauto")
    assert TautoResolver(TautoSetup(), mini_data, print)(spec) is spec  # published: nothing to do
    r = TautoResolver(TautoSetup(alpha=1.0, beta=0.0, delta=1.0, csg=2.0), mini_data, print)(spec)
    assert r.T == pytest.approx(32 ** 0.5 + 2.302585, abs=1e-3) and r.name == "fastnetw8_bn_Tauto"
    logged = []
    auto = TautoResolver(TautoSetup(gamma=1.0, csg="auto"), mini_data, logged.append)
    t = auto(spec).T
    assert logged and "CSG of cifar10-mini" in logged[0] and auto(spec).T == t  # computed once
    assert t == pytest.approx(max(0.1, 0.7239 * 32 ** 0.5 - 4.706 + math.log(auto._csg)), abs=1e-3)
