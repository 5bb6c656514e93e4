"""Adversarial training at a temperature, on real images: every regime trains, keeps its best
and last checkpoints, and buys robustness that a scale-free attack confirms."""
import pytest
import torch

from attacks import make_attack
from bench.checkpoints import CheckpointStore, checkpoint_key
from bench.data import stratified_indices
from bench.errors import BenchError
from bench.measure.adversarial import evaluate
from bench.profiles import Recipe, load_profile
from bench.train import catastrophic_epoch, train
from models import parse_name
from tests.conftest import TINY_RECIPE

# 6 epochs: fewer leave the standard model so weak (near-constant predictions) that it looks robust
AT = dict(epochs=6, batch_size=64, lr=0.1, at_steps=3, at_alpha="3/255", at_holdout=200, at_eval_steps=3)


@pytest.fixture(scope="module")
def test_split(mini_data):
    return mini_data.test.subset(stratified_indices(mini_data.test.labels, 200, 0))


@pytest.fixture(scope="module")
def pgd_at_run(mini_data):
    return train(parse_name("fastnetw8_T1_at"), Recipe(**AT), mini_data, torch.device("cpu"))


def robust(model, T, split):
    """Margin-loss PGD accuracy (scale-free, so a high T cannot fake it) at 8/255."""
    ms = evaluate(model, T, split, [make_attack("pgd_margin", {"steps": 10})], ["raw"], batch_size=100)
    return ms[0].metrics["accuracy"], ms[1].metrics["robust_acc"]


def test_pgd_at_buys_robustness_a_scale_free_attack_confirms(pgd_at_run, tiny_model, mini_data, test_split):
    # the standard twin is the AT recipe without its adversarial settings: tiny_model's run (the
    # same checkpoint key, so the same training), trained once per `make test`
    spec, std = tiny_model
    assert checkpoint_key(spec, Recipe(**AT), "d", 10) == checkpoint_key(spec, Recipe(**TINY_RECIPE), "d", 10)
    clean_std, robust_std = robust(std, 1.0, test_split)
    clean_at, robust_at = robust(pgd_at_run.model, 1.0, test_split)
    assert robust_at >= robust_std + 0.05, (robust_std, robust_at)
    assert robust_at / clean_at > robust_std / clean_std + 0.2  # it keeps more of what it gets right
    assert clean_at > 0.15 and clean_std > clean_at  # it still classifies, at the usual price


def test_best_and_last_checkpoints(pgd_at_run, mini_data, tmp_path):
    r = pgd_at_run
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4, 5, 6] and r.train_n == 2000 - 200  # 200 held out
    accs = [h["pgd_acc"] for h in r.history]
    assert r.best_epoch == 1 + accs.index(max(accs)) and r.best_state is not None
    store = CheckpointStore(tmp_path)
    spec, recipe = parse_name("fastnetw8_T1_at"), Recipe(**AT)
    key = checkpoint_key(spec, recipe, mini_data.fingerprint, 10)
    meta = store.save(spec, key, r.model, {"best_epoch": r.best_epoch}, best_state=r.best_state)
    best, last = (store.load(s, key, 10, torch.device("cpu")) for s in spec.checkpoints())
    assert [s.name for s in spec.checkpoints()] == ["fastnetw8_T1_at@best", "fastnetw8_T1_at@last"]
    assert best[1]["weights_sha256"] == meta["best_weights_sha256"] and last[1]["weights_sha256"] == meta["weights_sha256"]
    assert best[1]["checkpoint"] == "best" and last[1]["checkpoint"] == "last"
    sd_best, sd_last = best[0].state_dict(), last[0].state_dict()
    assert torch.equal(sd_best["fc.weight"], r.best_state["fc.weight"])
    if r.best_epoch != 6:
        assert not torch.equal(sd_best["fc.weight"], sd_last["fc.weight"])
    # a truncated best file is refused, the last one still loads
    best_file = tmp_path / meta["best_weights"]
    best_file.write_bytes(best_file.read_bytes()[:1000])
    with pytest.raises(BenchError, match="corrupt or truncated"):
        store.load(spec.checkpoints()[0], key, 10, torch.device("cpu"))
    assert store.load(spec.checkpoints()[1], key, 10, torch.device("cpu")) is not None


@pytest.mark.parametrize("regime", ["atT1", "trades", "fat"])
def test_every_regime_trains_and_checks_itself(regime, mini_data):
    # what each regime's loop does, not what it learns: 384 images and 128 held out (a quarter of
    # the mini tree's 2,000: the three cases 20 s -> 5 s, run alone on a 2-core Xeon)
    recipe = Recipe(**dict(AT, epochs=2, train_subset=512, at_holdout=128))
    r = train(parse_name(f"fastnetw8_T5_{regime}"), recipe, mini_data, torch.device("cpu"))
    assert r.train_n == 512 - 128
    assert len(r.history) == 2 and all(0 <= h["pgd_acc"] <= h["clean_acc"] <= 1 for h in r.history)
    assert r.best_state is not None and torch.isfinite(torch.tensor(r.final_train_loss))


def test_catastrophic_overfitting_rule():
    h = lambda *accs: [{"epoch": i + 1, "pgd_acc": a} for i, a in enumerate(accs)]  # noqa: E731
    assert catastrophic_epoch(h(0.10, 0.20, 0.25, 0.02, 0.30)) == 4  # collapse below 0.3 x best
    assert catastrophic_epoch(h(0.10, 0.20, 0.15, 0.12)) is None  # robust overfitting, not a collapse
    assert catastrophic_epoch(h(0.02, 0.001)) is None  # nothing to collapse from


def test_names_keys_and_grids(tmp_path):
    assert parse_name("resnet18_T5_at@best").name == "resnet18_T5_at@best"
    assert parse_name("resnet18_T5_at@best").run.name == "resnet18_T5_at"
    with pytest.raises(BenchError, match="only adversarially trained"):
        parse_name("resnet18_T5@best")
    with pytest.raises(BenchError, match="after @ comes best or last"):
        parse_name("resnet18_T5_at@first")
    # @best and @last share one training run; the adversarial settings do not touch std keys
    spec = parse_name("fastnet_T5_at")
    r1, r2 = Recipe(epochs=2), Recipe(epochs=2, at_steps=7)
    assert {checkpoint_key(s, r1, "d", 10) for s in spec.checkpoints()} == {checkpoint_key(spec, r1, "d", 10)}
    assert checkpoint_key(spec, r1, "d", 10) != checkpoint_key(spec, r2, "d", 10)
    std = parse_name("fastnet_T5")
    assert checkpoint_key(std, r1, "d", 10) == checkpoint_key(std, r2, "d", 10)
    # a grid entry stands for both checkpoints and may carry its own recipe
    (tmp_path / "p.toml").write_text('[recipe]\nepochs = 6\n[[grid]]\narch = "fastnet"\nT = [1, 5]\nregime = "at"\n'
                                     'recipe = {epochs = 2, at_steps = 4}\n[[grid]]\narch = "fastnet"\nT = [1]\n')
    p = load_profile(str(tmp_path / "p.toml"))
    assert p.models == ("fastnet_T1_at@best", "fastnet_T1_at@last", "fastnet_T5_at@best", "fastnet_T5_at@last",
                        "fastnet_T1")
    assert p.recipe_for(parse_name("fastnet_T5_at@best")).epochs == 2
    assert p.recipe_for(parse_name("fastnet_T5_at@best")).at_steps == 4
    assert p.recipe_for(parse_name("fastnet_T1")).epochs == 6
    (tmp_path / "bad.toml").write_text('[recipe]\nepochs = 6\n[[grid]]\narch = "fastnet"\nT = [1]\n'
                                       'recipe = {epohcs = 2}\n')
    with pytest.raises(BenchError, match="unknown key epohcs"):
        load_profile(str(tmp_path / "bad.toml"))
