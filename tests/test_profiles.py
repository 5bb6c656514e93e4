import pytest

from bench.errors import BenchError
from bench.profiles import available_profiles, load_profile


def test_shipped_profiles_load():
    assert {"smoke", "quick", "paper"} <= set(available_profiles())
    quick = load_profile("quick")
    assert [m for m in quick.models if "lrT" not in m] == [
        f"fastnet_T{t}" for t in ("0.5", "1", "2", "5", "10", "20", "50")]
    assert quick.eval.n == 1000 and quick.recipe.train_subset
    paper = load_profile("paper")
    assert "resnet18_T0.1" in paper.models and "resnet18_T100_s2" in paper.models
    assert paper.recipe.train_subset is None and paper.eval.n is None


@pytest.mark.parametrize("text,fragment", [
    ('[recipe]\nepochs = 1\nlr = -1\n', "lr must be positive"),
    ('[recipe]\nepochs = 1\n[eval]\nattacks = ["pgd", "cw"]\n', "unknown attack 'cw'"),
    ('[recipe]\nepochs = 1\n[attack.pgd]\nsteps = 0\n', "steps must be >= 1"),
    ('[recipe]\nepochs = 1\n[attack.pgd]\nstep = 3\n', "no parameter step"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "resnet19"\nT = [1]\n', "unknown model"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "resnet18"\nTemps = [1]\n', "unknown key Temps"),
    ('[recipe]\nepochs = 1\n[[grid]]\narch = "resnet18"\nT = [0]\n', "positive"),
    ('[recipes]\nepochs = 1\n', "unknown section"),
    ('[recipe\nepochs = 1\n', "not valid TOML"),
])
def test_bad_profiles(tmp_path, text, fragment):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=fragment):
        load_profile(str(path))
