"""The T* fitter on real results stores holding synthetic sweeps whose best T is known."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.errors import BenchError
from bench.tools.fit_temperature import best_temperatures, clean_accuracy, fit_tstar, main, parse_csg, read_tables, run
from bench.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
ALPHA, BETA, GAMMA, DELTA = 0.5, 1.0, 1.5, -0.8
DIMS = [16, 64, 144, 256, 576, 1024]  # sqrt(M) = 4, 8, 12, 16, 24, 32
FACTORS = [0.25, 0.5, 1.0, 2.0, 4.0]  # each group's grid: its T* times these


def truth(m, csg=None, classes=None):
    t = ALPHA * math.sqrt(m) + BETA
    if csg is not None:
        t += GAMMA * math.log(csg) + DELTA * math.log(classes)
    return t


def accuracy(t, t_star, peak=0.9):
    """Concave in ln T with its maximum at t_star."""
    return peak - 0.05 * (math.log(t) - math.log(t_star)) ** 2


def put_model(store, *, arch, m, t, acc, dataset="toyset", classes=10, head="bn", regime="std", lr_scale=False,
              seed=0, timestamp="2026-01-01T00:00:00+00:00", tauto=False):
    model = f"{arch}{'_bn' if head == 'bn' else ''}_T{'auto' if tauto else f'{t:g}'}" \
            f"{'_' + regime if regime != 'std' else ''}{'_lrT' if lr_scale else ''}{'_s' + str(seed) if seed else ''}"
    base = dict(run_key=f"key-{model}-{dataset}", dataset=dataset, split="test", n=500, subset_seed=0, attack_seed=0,
                model=model, arch=arch, T=float(t), head=head, regime=regime, lr_scale=lr_scale, seed=seed,
                feature_dim=m, num_classes=classes, source=f"{dataset}:test", code_version="test",
                timestamp=timestamp, eps=0.0, steps=0)
    store.put(dict(base, threat="clean", view="none", params={}, family="clean", metrics={"accuracy": acc}))
    # an attack row on the same model: not clean accuracy, must not count
    store.put(dict(base, threat="pgd", view="raw", params={"eps": 8 / 255}, family="attack",
                   metrics={"robust_acc": 0.99, "clean_acc": acc}))


def put_sweep(root, t_stars, *, dataset="toyset", classes=10, seeds=(0,), seed_noise=0.0, rng=None,
              distractors=True):
    """One BN-head group per (M -> T*), its grid T* x FACTORS, the given seeds. Distractors that
    the fitter must ignore: a plain-head group, loss x T models, adversarial training, an older
    run of one model, all peaking elsewhere."""
    store = ResultStore(root)
    rng = rng or np.random.default_rng(0)
    for m, t_star in t_stars.items():
        arch = f"toynetw{m}"
        for t in (t_star * f for f in FACTORS):
            for s in seeds:
                acc = accuracy(t, t_star) + (rng.normal(0, seed_noise) if seed_noise else 0.0)
                put_model(store, arch=arch, m=m, t=t, acc=acc, dataset=dataset, classes=classes, seed=s)
            if distractors:
                wrong = 0.99 if t == t_star * FACTORS[0] else 0.1  # would make the lowest T best
                put_model(store, arch=arch, m=m, t=t, acc=wrong, dataset=dataset, classes=classes, lr_scale=True)
                put_model(store, arch=arch, m=m, t=t, acc=wrong, dataset=dataset, classes=classes, regime="at")
                put_model(store, arch=arch, m=m, t=t, acc=wrong, dataset=dataset, classes=classes, head="plain")
        if distractors:  # an older run (another run key, earlier) of the best model
            t = t_star * FACTORS[0]
            old = dict(arch=arch, m=m, t=t, acc=0.999, dataset=dataset, classes=classes,
                       timestamp="2025-01-01T00:00:00+00:00")
            model_store = ResultStore(root)
            rec_model = f"{arch}_bn_T{t:g}"
            model_store.put(dict(run_key="older", dataset=dataset, split="test", n=500, subset_seed=0, attack_seed=0,
                                 threat="clean", view="none", params={}, family="clean", model=rec_model, arch=arch,
                                 T=float(t), head="bn", regime="std", lr_scale=False, seed=0, feature_dim=m,
                                 num_classes=classes, metrics={"accuracy": old["acc"]}, timestamp=old["timestamp"]))
    return root


def test_noise_free_sweep_recovers_alpha_and_beta(tmp_path):
    t_stars = {m: truth(m) for m in DIMS}
    put_sweep(tmp_path / "store", t_stars)
    # a group with two temperatures only: listed as skipped, not fitted
    store = ResultStore(tmp_path / "store")
    for t in (1.0, 2.0):
        put_model(store, arch="tinynet", m=9, t=t, acc=0.5)
    points, fit, text = run([str(tmp_path / "store")])
    assert len(points) == len(DIMS) and fit.n_points == len(DIMS)
    got = dict(zip(points.feature_dim, points.best_T))
    assert all(got[m] == pytest.approx(t_stars[m]) for m in DIMS)
    assert not points.edge.any() and set(points.n_T) == {5}
    assert fit.terms == ["alpha", "beta"]
    assert fit.coef["alpha"] == pytest.approx(ALPHA, abs=1e-9) and fit.coef["beta"] == pytest.approx(BETA, abs=1e-9)
    assert fit.residual_sd < 1e-9 and fit.r2 == pytest.approx(1.0)
    # the points lie on the line, but each is only a grid point, its optimum somewhere in its cell:
    # the interval holds the cells' spread (it had zero width, which no grid can give)
    for t, v in (("alpha", ALPHA), ("beta", BETA)):
        lo, hi = fit.ci[t]
        assert lo < v < hi and hi - lo > 0.1
    assert "residual variance taken at the grid's resolution" in text
    assert "tinynet/9/toyset/bn (2 temperatures)" in text
    assert "0.7239" in text and "-4.706" in text


def test_best_t_on_a_line_by_chance_is_no_exact_fit(tmp_path):
    """results/cpu without its T* models: the best T is 2 at all three widths (grid 0.5, 1, 2, 5):
    a residual of 1e-16 gave an interval of zero width around alpha = 0, and the published
    coefficients read "outside the CI". The best T's are grid points, each with its cell's spread."""
    store = ResultStore(tmp_path / "store")
    for m in (32, 64, 128):
        for t in (0.5, 1, 2, 5):
            put_model(store, arch=f"toynetw{m}", m=m, t=t, acc=accuracy(t, 2.2))
    points, fit, text = run([str(tmp_path / "store")])
    assert list(points.best_T) == [2.0, 2.0, 2.0] and fit.residual_sd < 1e-9
    assert fit.ci["alpha"][1] - fit.ci["alpha"][0] > 1.0 and "0.7239 (inside the CI)" in text
    assert points.resolution_sd.iloc[0] == pytest.approx((math.sqrt(10) - math.sqrt(2)) / math.sqrt(12))


def test_a_best_t_of_fewer_seeds_and_one_at_the_edge_without_tstar_are_said(tmp_path):
    """results/cpu-fulltest at M = 128 without T*: T=5, one seed, beat T=2's three by a third of an
    image, without a word; and with T* in the grid, 'the sweep without it' named T=5 without saying
    it is that grid's edge."""
    store = ResultStore(tmp_path / "store")
    for m, arch in ((32, "toynetw8"), (64, "toynet"), (128, "toynetw32")):
        for t in (1, 2, 5):
            for seed in ((0,) if t == 5 else (0, 1, 2)):
                put_model(store, arch=arch, m=m, t=t, seed=seed, acc=0.80 + 0.01 * (t == 5) * (m == 128))
        put_model(store, arch=arch, m=m, t=3.0, acc=0.9, tauto=True)
    points, _, text = run([str(tmp_path / "store")])
    big = points.set_index("feature_dim").loc[128]
    assert big.best_is_tauto and big.best_T_without_tauto == 5 and bool(big.edge_without_tauto)
    assert "the sweep without it: 5, at that grid's edge" in text
    points, _, text = run([str(tmp_path / "store")], without_tauto=True)
    assert "M=128 (toynetw32): the best T, 5, is a mean of 1 seed(s) where other temperatures have more" in text


def test_noisy_sweep_with_seeds_ci_covers_the_truth(tmp_path):
    rng = np.random.default_rng(5)
    dims = [16, 36, 64, 100, 144, 196, 256, 400, 576, 784, 1024]
    t_stars = {m: truth(m) + rng.normal(0, 0.7) for m in dims}  # the best T scatters around the line
    put_sweep(tmp_path / "store", t_stars, seeds=(0, 1, 2), seed_noise=0.002, rng=rng)
    points, fit, _ = run([str(tmp_path / "store")])
    assert set(points.n_seeds) == {3}
    assert all(all(part.endswith(":3") for part in s.split()) for s in points.seeds_per_T)
    # per seed the accuracy noise is far below the curvature: the mean over seeds peaks at T*
    assert np.allclose(points.sort_values("feature_dim").best_T, [t_stars[m] for m in dims])
    for t, v in (("alpha", ALPHA), ("beta", BETA)):
        assert fit.ci[t][0] < v < fit.ci[t][1]
        assert fit.bootstrap_ci[t][0] < fit.coef[t] < fit.bootstrap_ci[t][1]
    assert 0.3 < fit.residual_sd < 1.2 and fit.n_bootstrap > 1900
    assert fit.coef["alpha"] == pytest.approx(ALPHA, abs=3 * fit.se["alpha"])


def test_ols_intervals_cover_at_their_nominal_rate():
    """400 synthetic point sets, 8 points each, Gaussian scatter: the 95% intervals cover the
    true coefficients about 95% of the time (binomial sd 1.1%: the band is 3 sd)."""
    rng = np.random.default_rng(11)
    m = np.array([16, 64, 144, 256, 400, 576, 784, 1024])
    hits = {"alpha": 0, "beta": 0}
    for _ in range(400):
        pts = pd.DataFrame({"feature_dim": m, "num_classes": 10, "dataset": "d",
                            "best_T": ALPHA * np.sqrt(m) + BETA + rng.normal(0, 1.0, len(m))})
        fit = fit_tstar(pts, bootstrap=False)
        for t, v in (("alpha", ALPHA), ("beta", BETA)):
            hits[t] += fit.ci[t][0] <= v <= fit.ci[t][1]
    for t in hits:
        assert 0.917 <= hits[t] / 400 <= 0.983, hits


def test_corrections_from_csg_and_class_count(tmp_path):
    datasets = {"dsA": (2.0, 10), "dsB": (8.0, 100), "dsC": (5.0, 10)}
    for name, (c, k) in datasets.items():
        put_sweep(tmp_path / "store", {m: truth(m, c, k) for m in DIMS[:4]}, dataset=name, classes=k,
                  distractors=False)
    csg = {n: c for n, (c, _) in datasets.items()}
    points, fit, text = run([str(tmp_path / "store")], csg=csg)
    assert fit.terms == ["alpha", "beta", "gamma", "delta"] and fit.n_points == 12
    for t, v in (("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA), ("delta", DELTA)):
        assert fit.coef[t] == pytest.approx(v, abs=1e-8)
    assert "gamma*ln(CSG)" in text and "not published" in text
    # two datasets cannot separate ln(CSG) from ln(num_classes): delta is left out, with a note
    two = best_temperatures(clean_accuracy(read_tables([str(tmp_path / "store")])))[0]
    two = two[two.dataset != "dsC"]
    fit2 = fit_tstar(two, csg)
    assert fit2.terms == ["alpha", "beta", "gamma"] and any("delta not fitted" in n for n in fit2.notes)
    # no CSG given: the class count alone still enters
    fit3 = fit_tstar(best_temperatures(clean_accuracy(read_tables([str(tmp_path / "store")])))[0])
    assert fit3.terms == ["alpha", "beta", "delta"]
    with pytest.raises(BenchError, match="no CSG value for dataset"):
        fit_tstar(points, {"dsA": 2.0})


def test_interpolation_between_grid_points(tmp_path):
    store = ResultStore(tmp_path / "store")
    t_stars = {64: 7.0, 256: 13.0, 1024: 27.0}
    grid = [1, 2, 5, 10, 20, 50]
    for m, t_star in t_stars.items():
        for t in grid:
            put_model(store, arch=f"toynetw{m}", m=m, t=t, acc=accuracy(t, t_star))
    on_grid, _, _ = run([str(tmp_path / "store")])
    assert set(on_grid.best_T) <= set(grid)
    refined, _, _ = run([str(tmp_path / "store")], interpolate=True)
    # the accuracy is an exact parabola in ln T: three points give its vertex exactly
    assert np.allclose(refined.sort_values("feature_dim").best_T, [7.0, 13.0, 27.0])


def test_cli_end_to_end_with_plot_and_json(tmp_path):
    datasets = {"dsA": (2.0, 10), "dsB": (8.0, 100), "dsC": (5.0, 10)}
    for name, (c, k) in datasets.items():
        put_sweep(tmp_path / name, {m: truth(m, c, k) for m in DIMS[:4]}, dataset=name, classes=k)
    (tmp_path / "csg.json").write_text(json.dumps({"dsC": {"value": 5.0, "embedding": "pca32"}}))
    cmd = [sys.executable, "-m", "bench.tools.fit_temperature", "--plot", str(tmp_path / "out" / "tstar.png"),
           "--json", str(tmp_path / "out" / "fit.json"), "--csg", "dsA=2", "--csg", "dsB=8",
           "--csg-json", str(tmp_path / "csg.json")]
    for name in datasets:
        cmd += ["--results", str(tmp_path / name)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "least squares on 12 points (8 dof)" in proc.stdout
    alpha_line = next(line for line in proc.stdout.splitlines() if line.startswith("alpha "))
    assert "0.5 " in alpha_line and "0.7239" in alpha_line
    with Image.open(tmp_path / "out" / "tstar.png") as im:
        assert im.format == "PNG" and im.size[0] > 400
    saved = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert saved["fit"]["coef"]["gamma"] == pytest.approx(GAMMA) and len(saved["points"]) == 12


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    proc = subprocess.run([sys.executable, "-m", "bench.tools.fit_temperature", "--results", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: results folder") and "does not exist" in proc.stderr
    assert proc.stderr.count("\n") == 1

    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    (tmp_path / "empty").mkdir()
    err = error(["--results", str(tmp_path / "empty")])
    assert "too few groups" in err and "found 0" in err and "bn_head = true" in err
    put_sweep(tmp_path / "two", {64: 5.0, 256: 9.0}, distractors=False)
    assert "found 2" in error(["--results", str(tmp_path / "two")])
    same_m = ResultStore(tmp_path / "same_m")
    for arch in ("a", "b", "c"):
        for t in (1, 2, 4):
            put_model(same_m, arch=arch, m=64, t=t, acc=accuracy(t, 2))
    assert "1 distinct M" in error(["--results", str(tmp_path / "same_m")])
    plain = ResultStore(tmp_path / "plain")
    for m in (16, 64, 256):
        for t in (1, 2, 4):
            put_model(plain, arch=f"n{m}", m=m, t=t, acc=accuracy(t, 2), head="plain")
    assert "--head plain" in error(["--results", str(tmp_path / "plain")])
    assert main(["--results", str(tmp_path / "plain"), "--head", "plain"]) == 0
    capsys.readouterr()
    put_sweep(tmp_path / "ok", {m: truth(m) for m in DIMS[:3]}, distractors=False)
    # BN-head groups only, the plain head asked for: the hint names the head that fits them
    err = error(["--results", str(tmp_path / "ok"), "--head", "plain"])
    assert "another head: --head all or --head bn fits those" in err
    assert "NAME=VALUE" in error(["--results", str(tmp_path / "ok"), "--csg", "toyset:3"])
    assert "no CSG value for dataset(s) toyset" in error(["--results", str(tmp_path / "ok"), "--csg", "other=3"])
    assert "positive" in error(["--results", str(tmp_path / "ok"), "--csg", "toyset=0"])
    (tmp_path / "mixed.json").write_text(json.dumps({"a": {"value": 1, "embedding": "pca32"},
                                                     "b": {"value": 2, "embedding": "raw"}}))
    assert "different embeddings" in error(["--results", str(tmp_path / "ok"), "--csg-json",
                                            str(tmp_path / "mixed.json")])
    assert "does not exist" in error(["--results", str(tmp_path / "ok"), "--csg-json", str(tmp_path / "x.json")])
    # an output under a file, or a folder as the output: checked before the fit, so --plot is not written either
    (tmp_path / "a_file").write_text("")
    assert "is not a writable folder" in error(["--results", str(tmp_path / "ok"), "--plot", str(tmp_path / "p.png"),
                                                "--json", str(tmp_path / "a_file" / "fit.json")])
    assert "is a folder" in error(["--results", str(tmp_path / "ok"), "--json", str(tmp_path / "ok")])
    assert not (tmp_path / "p.png").exists()


def test_a_model_of_unknown_width_is_left_out(tmp_path, capsys):
    """A record may leave feature_dim null; among the std rows it stopped the fit with pandas'
    IntCastingNaNError."""
    put_sweep(tmp_path, {m: truth(m) for m in DIMS[:3]}, distractors=False)
    for t in (1, 2, 4):
        put_model(ResultStore(tmp_path), arch="unknown", m=None, t=t, acc=accuracy(t, 2))
    assert main(["--results", str(tmp_path)]) == 0
    assert "unknown" not in capsys.readouterr().out


def test_parse_csg_sources():
    assert parse_csg(["a=1.5", "b = 2"], None) == {"a": 1.5, "b": 2.0}


@pytest.mark.parametrize("setting, a, b", [("split", "train", "test"), ("k", 3, 10), ("parzen", False, True),
                                           ("m_per_class", 250, 100)])
def test_csg_values_made_otherwise_are_not_fitted_together(tmp_path, setting, a, b):
    """The neighbour pool and graph make the value (CIFAR-10: 4.1 on its test split, 3.5 on its
    train): a file of one dataset's train value and another's test value was fitted without a word."""
    entry = {"embedding": "pca32", "split": "train", "k": 3, "parzen": False, "m_per_class": 250}
    path = tmp_path / "csg.json"
    path.write_text(json.dumps({"c10": dict(entry, value=3.5, **{setting: a}),
                                "c100": dict(entry, value=40.1, **{setting: b})}))
    with pytest.raises(BenchError, match=f"^CSG values made with different {setting} are not comparable"):
        parse_csg([], str(path))
    path.write_text(json.dumps({"c10": dict(entry, value=3.5), "c100": dict(entry, value=40.1, seed=7)}))
    assert parse_csg([], str(path)) == {"c10": 3.5, "c100": 40.1}  # another seed: the same estimator


def test_three_points_get_no_bootstrap_interval():
    """A resample of 3 points is an exact fit through 2 of the widths: its spread is no interval
    (on results/cpu's points it excluded the fit's own alpha). Ten points get one."""
    rng = np.random.default_rng(3)

    def points(m):
        return pd.DataFrame({"feature_dim": m, "num_classes": 10, "dataset": "d",
                             "best_T": ALPHA * np.sqrt(m) + BETA + rng.normal(0, 1.0, len(m))})
    few = fit_tstar(points(np.array([16, 64, 256])))
    assert few.bootstrap_ci == {} and few.n_bootstrap == 0 and few.ci["alpha"][0] < few.coef["alpha"]
    assert any(n.startswith("no bootstrap interval: 3 points for 2 terms") for n in few.notes)
    enough = fit_tstar(points(np.linspace(16, 1024, 10)))
    assert enough.n_bootstrap > 1900 and not any("bootstrap" in n for n in enough.notes)


def test_a_best_t_that_is_the_formulas_own_point_says_so(tmp_path, capsys):
    """Every width's sweep peaks at T=2; the widest also has its T* model (<arch>_bn_Tauto, at the
    formula's T = 3.3), the best of its group. The point is kept, but the table, the notes and the
    JSON say that the best T there is the T* model's and give the sweep's own (2); --without-tauto
    fits without it: a flat line, where with it the best T "rises with M"."""
    store = ResultStore(tmp_path / "store")
    for m in (16, 64, 144):
        for t in (0.5, 1, 2, 5):
            put_model(store, arch=f"toynetw{m}", m=m, t=t, acc=accuracy(t, 2))
    put_model(store, arch="toynetw144", m=144, t=3.3, acc=0.95, tauto=True)
    put_model(store, arch="toynetw64", m=64, t=1.1, acc=0.5, tauto=True)  # a T* model that is not the best
    points, fit, text = run([str(tmp_path / "store")])
    by_m = points.set_index("feature_dim")
    assert by_m.best_T.tolist() == [2, 2, 3.3] and fit.coef["alpha"] > 0.1
    assert by_m.best_is_tauto.tolist() == [False, False, True]
    assert by_m.loc[144, "best_T_without_tauto"] == 2 and by_m.loc[144, "tauto_T"] == "3.3"
    assert by_m.loc[64, "tauto_T"] == "1.1" and by_m.best_T_without_tauto.isna()[[16, 64]].all()
    assert "note: M=144 (toynetw144): the best T, 3.3, is the T* model's" in text
    assert "the sweep without it: 2" in text and "best_T_without_T*" in text

    assert main(["--results", str(tmp_path / "store"), "--without-tauto", "--json", str(tmp_path / "fit.json")]) == 0
    out = capsys.readouterr().out
    assert "without the T* (_Tauto) models" in out and "is the T* model's" not in out
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["without_tauto"] is True
    assert [p["best_T"] for p in saved["points"]] == [2, 2, 2]
    assert not any(p["best_is_tauto"] for p in saved["points"])
    assert saved["fit"]["coef"]["alpha"] == pytest.approx(0, abs=1e-9)

    assert main(["--results", str(tmp_path / "store"), "--json", str(tmp_path / "with.json")]) == 0
    saved = json.loads((tmp_path / "with.json").read_text())  # strict JSON: null, not NaN
    assert [p["best_T_without_tauto"] for p in saved["points"]] == [None, None, 2]
    assert [p["best_is_tauto"] for p in saved["points"]] == [False, False, True]


def test_edge_groups_and_pooled_heads_are_said_beside_the_published_comparison():
    """A best T at the grid's edge is a bound, fitted as a value: the fit without those groups says
    whether the published-coefficient verdict survives them; --head all pools the heads."""
    from bench.tools.fit_temperature import _caveats
    m = np.array([16, 64, 256, 1024, 4096])
    points = pd.DataFrame({"feature_dim": m, "num_classes": 10, "dataset": "d", "best_T": ALPHA * np.sqrt(m) + BETA,
                           "edge": [False, False, False, True, True]})
    (line,) = _caveats(points, None, "bn")
    assert line.startswith("note: without the 2 edge group(s) (their best T a bound, not a value), 3 points: alpha ")
    assert "(inside the CI)" in line or "(outside the CI)" in line
    points["edge"] = [False, False, True, True, True]
    (line,) = _caveats(points, None, "bn")
    assert "2 remain: too few to fit" in line and "rests on best T values that are bounds" in line
    assert _caveats(points.assign(edge=False), None, "bn") == []
    assert _caveats(points.assign(edge=False), None, None)[0].startswith("note: --head all pools")
