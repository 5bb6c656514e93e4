import pytest

from bench.errors import BenchError
from bench.profiles import MEASURE_PARTS, available_profiles, load_profile
from models import parse_name


def test_shipped_profiles_load():
    assert {"smoke", "quick", "paper"} <= set(available_profiles())
    quick = load_profile("quick")
    assert [m for m in quick.models if "_" not in m.split("_T")[1] and "_bn" not in m] == [
        f"fastnet_T{t}" for t in ("0.5", "1", "2", "5", "10", "20", "50")]
    assert {"fastnet_T20_lrT", "fastnet_bn_Tauto", "fastnet_T5_fat@best"} <= set(quick.models)
    assert "fastnet_T5_fat@last" not in quick.models  # the grid entry keeps only the best checkpoint
    assert quick.recipe_for(parse_name("fastnet_T5_fat@best")).train_subset < quick.recipe.train_subset
    assert quick.eval.n == 400 and quick.recipe.train_subset and quick.eval.transfer
    paper = load_profile("paper")
    assert "resnet18_T0.1" in paper.models and "resnet18_T100_s2" in paper.models
    assert paper.recipe.train_subset is None and paper.eval.n is None
    cpu = load_profile("cpu")  # issue 18's full-data profile: seeds at 1, 5, 20 in both arms, both AT checkpoints
    assert cpu.recipe.train_subset is None and cpu.eval.n == 2000 and cpu.eval.crosscheck_n == 1000
    assert {"fastnet_T5_lrT_s2", "fastnet_T20_s1", "fastnet_T1_fat@last", "fastnetw32_bn_Tauto"} <= set(cpu.models)
    assert cpu.keep_checkpoints and not quick.keep_checkpoints
    bn, std = parse_name("fastnetw32_bn_T2"), parse_name("fastnet_T20_s1")  # claim B's models: clean and calibration
    assert cpu.measures(bn, "clean") and cpu.measures(bn, "calibration") and not cpu.measures(bn, "attacks")
    assert all(cpu.measures(std, part) for part in MEASURE_PARTS)
    assert cpu.measures(bn, "autoattack crosscheck")  # AutoAttack for every model
    # claim A5's seed replicates: the whole audit and the shifts, as seed 0 (the BN head keeps its
    # narrowed list, above)
    fat_s1 = parse_name("fastnet_T5_fat_s1@last")
    assert all(cpu.measures(fat_s1, part) for part in MEASURE_PARTS)
    assert "fastnet_T20_fat_s2@best" in cpu.models


def test_measure_parts_are_the_families():
    """A [[grid]] entry's `measure` names the measurement families, and "clean"."""
    from bench.measure.families import FAMILIES
    assert set(MEASURE_PARTS) == {"clean"} | {F.name for F in FAMILIES}


def test_keep_checkpoints_puts_them_beside_the_results(tmp_path):
    """keep_checkpoints: the checkpoints go to <results>/checkpoints (to be committed), not the
    cache; a --store folder still takes them (a cluster's shared folder)."""
    from bench.grid.plan import Plan
    path = tmp_path / "p.toml"
    path.write_text('keep_checkpoints = true\n[recipe]\nepochs = 1\n[[grid]]\narch = "fastnet"\nT = [1]\n')
    plan = Plan(profile=load_profile(str(path)), models=[], attacks=[], views=[], results_dir=tmp_path / "res",
                cache_dir=tmp_path / "cache")
    assert plan.checkpoint_dir == tmp_path / "res" / "checkpoints"
    assert Plan(**{**plan.__dict__, "store_dir": tmp_path / "shared"}).checkpoint_dir == tmp_path / "shared" / "checkpoints"
    path.write_text(path.read_text().replace("true", "false"))
    private = Plan(**{**plan.__dict__, "profile": load_profile(str(path))})
    assert private.checkpoint_dir == tmp_path / "cache" / "checkpoints"
    # the reports link kept checkpoints only, never the private cache
    assert plan.kept_checkpoint_dir == plan.checkpoint_dir and private.kept_checkpoint_dir is None
    shared = Plan(**{**private.__dict__, "store_dir": tmp_path / "shared"})
    assert shared.kept_checkpoint_dir == tmp_path / "shared" / "checkpoints"


@pytest.mark.parametrize("text,fragment", [
    ('[recipe]\nepochs = 1\nlr = -1\n', "lr must be positive"),
    ('[recipe]\nepochs = 1\n[eval]\nattacks = ["pgd", "cw"]\n', "unknown attack 'cw'"),
    ('[recipe]\nepochs = 1\n[attack.pgd]\nsteps = 0\n', "steps must be >= 1"),
    ('[recipe]\nepochs = 1\n[attack.pgd]\nstep = 3\n', "no parameter step"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "resnet19"\nT = [1]\n', "unknown model"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "resnet18"\nTemps = [1]\n', "unknown key Temps"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "resnet18"\nT = [0]\n', "positive"),
    ('[recipes]\nepochs = 1\n', "unknown section"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "fastnet"\nregime = "fat"\ncheckpoints = ["first"]\n',
     'checkpoints must be "best" or "last"'),
    ('[recipe]\nepochs = 1\n[eval]\ncrosscheck_models = ["fastnet_T3"]\n[[grid]]\narch = "fastnet"\nT = [1]\n',
     "crosscheck_models: fastnet_T3 not in the grid"),
    ('[recipe\nepochs = 1\n', "not valid TOML"),
    ('keep_checkpoints = "yes"\n[recipe]\nepochs = 1\n', "keep_checkpoints must be true or false"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "fastnet"\nmeasure = ["clean", "attack"]\n', 'measure must be one of "clean"'),
    # one run, two recipes: the file's order chose one without a word (T=5 trained 1 epoch, not 3)
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "fastnet"\nT = [1, 5]\nrecipe = {epochs = 1}\n[[grid]]\narch = "fastnet"\n'
     'T = [5, 10]\nrecipe = {epochs = 3}\n', r"entries 1 and 2 both name fastnet_T5, with recipe \{'epochs': 1\} and "
     r"\{'epochs': 3\}"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "fastnet"\nT = [10]\n[[grid]]\nmodels = ["fastnet_T10"]\n'
     'recipe = {epochs = 3}\n', r"entries 1 and 2 both name fastnet_T10, with recipe none and \{'epochs': 3\}"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "fastnet"\nT = [1]\nmeasure = "clean"\n[[grid]]\narch = "fastnet"\n'
     'T = [1]\n', r"both name fastnet_T1, with measure \('clean',\) and none"),
    # @best/@last of no adversarial run: it was accepted and meant nothing
    ('[recipe]\nepochs = 1\n[[grid]]\nmodels = ["fastnet_T2"]\ncheckpoints = "last"\n',
     "checkpoints = 'last' picks @best or @last of adversarially trained models, and this entry has none"),
])
def test_bad_profiles(tmp_path, text, fragment):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=fragment):
        load_profile(str(path))


def test_threat_selection_by_name():
    from attacks.natural import NATURAL
    from bench.threats import select
    ev = load_profile("quick").eval
    assert ev.corruptions == "auto" and ev.natural and ev.shifts == ("cifar10.1",)
    # --attack names exactly what runs: the profile's other threats are off
    only_pgd = select(ev, ["pgd"])
    assert (only_pgd.attacks, only_pgd.corruptions, only_pgd.natural, only_pgd.shifts) == (("pgd",), "none", (), ())
    c = select(ev, ["corruptions"], ["gaussian_noise", "fog"], [3, 5])
    assert c.attacks == () and c.corruptions == "auto" and c.corruption_names == ("gaussian_noise", "fog")
    assert c.severities == (3, 5)
    nat = select(ev, ["natural", "cifar10.1"])
    assert nat.natural == (*NATURAL, "worst_grid") and nat.shifts == ("cifar10.1",) and nat.corruptions == "none"
    assert select(ev, ["rotate", "rotate"]).natural == ("rotate",)
    # --corruptions alone keeps the profile's threats and narrows its corruptions
    narrowed = select(ev, None, ["fog"])
    assert narrowed.attacks == ev.attacks and narrowed.corruption_names == ("fog",)
    # and switches corruptions on in a profile that has none
    smoke_like = select(select(ev, ["pgd"]), None, None, [5])
    assert smoke_like.corruptions == "auto" and smoke_like.severities == (5,)
    everything = select(ev, ["all"])
    assert everything.corruptions == "auto" and len(everything.natural) == len(NATURAL) + 1
    assert "pgd" in everything.attacks and everything.shifts == ("cifar10.1",)
    # none: clean accuracy and calibration alone (a cheap pass over a larger test set)
    nothing = select(ev, ["none"])
    assert (nothing.attacks, nothing.corruptions, nothing.natural, nothing.shifts, nothing.eps_sweep,
            nothing.transfer, nothing.fp64_n, nothing.crosscheck_n) == ((), "none", (), (), (), False, 0, 0)


@pytest.mark.parametrize("tokens,corruptions,severities,fragment", [
    (["fog"], None, None, "a corruption: --attack corruptions --corruptions fog"),
    (["rotat"], None, None, "did you mean rotate"),
    (["corruptions"], ["fgo"], None, "unknown corruption 'fgo' (did you mean fog?)"),
    (["corruptions"], None, [0, 6], "severities must lie in 1..5, got [0, 6]"),
    (["none", "pgd"], None, None, "--attack none measures nothing beyond clean accuracy and calibration"),
])
def test_bad_threat_selection(tokens, corruptions, severities, fragment):
    from bench.threats import select
    with pytest.raises(BenchError) as e:
        select(load_profile("quick").eval, tokens, corruptions, severities)
    assert fragment in str(e.value)


def test_a_profile_saved_with_a_byte_order_mark_loads(tmp_path):
    """An editor's UTF-8 BOM before the first table was "not valid TOML: Invalid statement (at
    line 1, column 1)"; it reads as the same profile without it."""
    text = '[recipe]\nepochs = 2\n[[grid]]\narch = "fastnet"\nT = [1, 5]\n'
    (tmp_path / "plain.toml").write_text(text)
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    bom, plain = load_profile(str(tmp_path / "bom.toml")), load_profile(str(tmp_path / "plain.toml"))
    assert bom.models == plain.models == ("fastnet_T1", "fastnet_T5") and bom.recipe == plain.recipe


def test_checkpoints_picks_from_listed_models_too(tmp_path):
    """`checkpoints` narrowed an arch/T product's adversarial runs and was ignored for a `models`
    list: fastnet_T1_fat with checkpoints = "best" evaluated @last as well."""
    path = tmp_path / "p.toml"
    path.write_text('[recipe]\nepochs = 1\n[[grid]]\nmodels = ["fastnet_T1_fat", "fastnet_T2"]\ncheckpoints = "best"\n'
                    '[[grid]]\narch = "fastnet"\nT = [1, 2]\n[[grid]]\narch = "fastnet"\nT = [5]\n'
                    'recipe = {epochs = 2}\n[[grid]]\nmodels = ["fastnet_T5"]\nrecipe = {epochs = 2}\n')
    assert load_profile(str(path)).models == ("fastnet_T1_fat@best", "fastnet_T2", "fastnet_T1", "fastnet_T5")


def test_a_float_written_as_a_whole_number_is_the_same_recipe():
    """lr = 1 and lr = 1.0 (label_smoothing = 0 and the default 0.0) trained under two keys: the
    same model twice, and a store whose records named either key could not find the other's."""
    from bench.checkpoints import checkpoint_key
    from bench.profiles import Recipe

    def key(**recipe):
        return checkpoint_key(parse_name("fastnet_T5"), Recipe(epochs=1, **recipe), "d", 10)

    assert key(lr=1) == key(lr=1.0) and key(label_smoothing=0) == key() and key(warmup=0) == key(warmup=0.0)
    assert key(lr=1) != key(lr=2)
