"""ECE, NLL and temperature scaling on synthetic logits whose calibration is known by construction."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bench.calibration import (N_BINS, ece, fit_temperature, nll, plot_reliability, reliability_bins,
                               temperature_scaling)


def calibrated(n=20000, k=10, scale=2.0, seed=0):
    """Logits z and labels drawn from softmax(z): calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z, y


def ece_bound(n, n_bins=N_BINS, delta=1e-6):
    """E[ECE] <= sqrt(n_bins / n) / 2 for calibrated data (per bin |acc - conf| has standard
    deviation <= 1/(2 sqrt(n_m)); sum_m sqrt(n_m) <= sqrt(n_bins n)), plus McDiarmid's deviation:
    one label moves ECE by at most 1/n, so P(ECE > E + t) <= exp(-2 n t^2)."""
    return math.sqrt(n_bins / n) / 2 + math.sqrt(math.log(1 / delta) / (2 * n))


def numpy_ece(logits, labels, n_bins=15):
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    acc = (pred == np.asarray(labels)).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(acc[inside].mean() - conf[inside].mean())
    return total


def numpy_nll(logits, labels):
    z = np.asarray(logits, np.float64)
    m = z.max(1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(labels)].mean())


def test_calibrated_logits_have_small_ece_and_miscalibrated_do_not():
    z, y = calibrated()
    bound = ece_bound(len(y))  # 0.032 at n = 20000
    assert ece(z, y) < bound
    # the same labels against sharpened or flattened logits: the ECE sees it
    assert ece(2 * z, y) > 3 * bound
    assert ece(0.5 * z, y) > 3 * bound
    bins = reliability_bins(z, y)
    assert bins.count.sum() == len(y) and len(bins.count) == 15
    filled = bins.count > 0
    assert np.all(bins.confidence[filled] > bins.edges[:-1][filled])
    assert np.all(bins.confidence[filled] <= bins.edges[1:][filled])


def test_ece_and_nll_match_a_numpy_reimplementation():
    rng = np.random.default_rng(3)
    for k, scale in ((2, 1.0), (10, 3.0), (100, 5.0)):
        z = rng.normal(0, scale, (777, k))
        y = rng.integers(0, k, 777)
        assert ece(torch.tensor(z), torch.tensor(y)) == pytest.approx(numpy_ece(z, y), abs=1e-12)
        assert nll(torch.tensor(z), torch.tensor(y)) == pytest.approx(numpy_nll(z, y), rel=1e-12)
        assert ece(torch.tensor(z), torch.tensor(y), temperature=2.5) == pytest.approx(numpy_ece(z / 2.5, y),
                                                                                     abs=1e-12)
    # float32 input is read in float64 as given
    z32 = torch.tensor(z, dtype=torch.float32)
    assert nll(z32, torch.tensor(y)) == pytest.approx(numpy_nll(z32.double().numpy(), y), rel=1e-12)


@pytest.mark.parametrize("c", [0.25, 0.5, 3.0, 10.0])
def test_temperature_scaling_recovers_a_known_factor(c):
    z, y = calibrated(seed=1)
    t = fit_temperature(c * z, y)
    assert t == pytest.approx(c, rel=0.05)
    report = temperature_scaling(c * z[:10000], y[:10000], c * z[10000:], y[10000:])
    assert report.temperature == pytest.approx(c, rel=0.07)
    assert report.ece_after < ece_bound(10000)
    assert report.nll_after <= report.nll_before + 1e-9
    assert report.nll_after == pytest.approx(nll(z[10000:], y[10000:]), abs=0.01)


def test_saturated_logits_give_finite_numbers():
    z, y = calibrated(n=5000, seed=2)
    big = 1e3 * z.float()  # the float32 softmax is exactly 1.0 for most rows
    assert (torch.softmax(big, 1).max(1).values == 1.0).float().mean() > 0.5
    for value in (ece(big, y), nll(big, y)):
        assert math.isfinite(value)
    assert nll(big, y) > 100  # confidently wrong rows cost ~1e3 nats each: large, not inf
    t = fit_temperature(big, y)
    assert t == pytest.approx(1e3, rel=0.1)
    assert nll(big, y, t) == pytest.approx(nll(z, y), abs=0.02)
    assert ece(big, y, temperature=t) < ece_bound(5000)


def test_separable_data_goes_to_small_t_and_bad_input_is_refused():
    z = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    y = torch.tensor([0, 1])
    # NLL(T) = log(1 + exp(-5/T)) falls towards 0 as T -> 0 and is 0 in float64 below T ~ 0.1
    t = fit_temperature(z, y, bounds=(0.01, 100))
    assert 0.01 <= t < 0.15 and nll(z, y, t) < 1e-12
    with pytest.raises(ValueError, match="NaN"):
        ece(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="expected logits"):
        nll(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_reliability_diagram_is_written_atomically(tmp_path):
    z, y = calibrated(n=3000, seed=4)
    path = plot_reliability(2 * z, y, tmp_path / "plots" / "reliability.png", title="toy")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
        pixels = np.asarray(im.convert("RGB"))
    # the over-confidence gap is shaded red: some clearly reddish pixels exist
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    assert ((r - g > 40) & (r - b > 40)).sum() > 100
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["reliability.png"]  # no temp files left


def test_a_cross_fit_half_without_errors_takes_the_other_halfs_temperature():
    """n = 100 at 98% accuracy: one seeded half can hold both errors and the other none. That half's
    NLL falls as T -> 0, its fitted T sat at the search's bound, and the half with the errors, divided
    by it, put them at confidence ~1 (nll_posthoc 30x the raw one)."""
    from bench.data import Split
    from bench.measure.calibration import evaluate_calibration
    n, seed = 100, 0
    half = torch.zeros(n, dtype=torch.bool)
    half[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n // 2]] = True
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (n,), generator=g)
    shown = labels.clone()
    wrong = half.nonzero().flatten()[:2]  # both errors in one half
    shown[wrong] = (labels[wrong] + 1) % 10
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = shown.to(torch.uint8)
    images[:, 1, 0, 0] = torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8)

    class Reads(torch.nn.Module):  # logits from the pixel it is shown, its margin from another pixel
        def forward(self, x):
            cls = (x[:, 0, 0, 0] * 255).round().long()
            return 3.0 * (1 + x[:, 1, 0, 0])[:, None] * torch.nn.functional.one_hot(cls, 10).float()

    ms = {m.view: m.metrics for m in evaluate_calibration(Reads(), 1.0, Split(images, labels), 50, seed)}
    post = ms["posthoc"]
    assert post["posthoc_T_fold_a"] == post["posthoc_T_fold_b"] > 0.1  # the half with errors' T, not a bound
    assert post["nll"] < 2 * ms["raw"]["nll"]
    assert post["posthoc_halves_without_errors"] == 1  # and the record says so


class Lookup(torch.nn.Module):
    """A network that knows the test split by heart: logits 10 for each image's label (``shift``
    classes on: always wrong), 0 elsewhere. No temperature fits it: the estimate stopped at the
    search's bound (0.00111 or 9,999.99) and was used as the model's T."""

    def __init__(self, split, shift: int):
        super().__init__()
        self.register_buffer("keys", split.images.flatten(1).float().div(255))
        self.register_buffer("labels", (split.labels + shift) % 10)

    def forward(self, x):
        hit = torch.cdist(x.flatten(1), self.keys).argmin(1)
        # plus a sliver of the input: a network without an input gradient is refused before this
        return 10.0 * torch.nn.functional.one_hot(self.labels[hit], 10).float() + 1e-3 * x.mean((1, 2, 3))[:, None]


@pytest.mark.parametrize("shift, why", [(0, "it classifies all [0-9]+ held-out test images correctly"),
                                        (1, "its NLL on [0-9]+ held-out test images only falls as T grows")])
def test_a_temperature_at_the_searchs_bound_is_refused(mini_data, mini_root, mini_cache, tmp_path, shift, why):
    from bench.api import audit
    from bench.errors import BenchError
    from bench.measure.calibration import estimate_temperature
    from bench.profiles import load_profile
    model = Lookup(mini_data.test, shift)
    with pytest.raises(BenchError, match=f"the temperature cannot be estimated: {why}.*--temperature"):
        estimate_temperature(model, mini_data, load_profile("smoke").eval)
    with pytest.raises(BenchError, match=f"^oracle: the temperature cannot be estimated: {why}"):
        audit(model, name="oracle", data_root=str(mini_root), cache=str(mini_cache), n=200, profile="smoke",
              attacks=["fgsm"], results=str(tmp_path / "r"), log=lambda m: None)
    assert not (tmp_path / "r" / "records").exists() or not any((tmp_path / "r" / "records").iterdir())


def test_each_views_record_times_its_own_work():
    """One clock served the three views: each record's wall_s ran from the job's start, so a
    store's records counted a calibration's time about three times (142 s for 47 s of work in
    results/cpu) and priced it so in --dry-run. The forward pass is the raw record's, as its passes
    are; the scaled and post-hoc views cost their own arithmetic."""
    import time
    from bench.data import Split
    from bench.measure.calibration import evaluate_calibration

    class Slow(torch.nn.Module):  # a model whose forward pass takes a known 0.2 s a batch
        def forward(self, x):
            time.sleep(0.2)
            return x.flatten(1)[:, :10] * 10

    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8),
                  torch.randint(0, 10, (40,), generator=g))
    t = time.perf_counter()
    walls = {m.view: m.wall_s for m in evaluate_calibration(Slow(), 1.0, split, 20, 0)}
    elapsed = time.perf_counter() - t
    assert walls["raw"] >= 0.4 and walls["scaled"] < 0.2 and walls["posthoc"] < 0.2, walls
    assert sum(walls.values()) <= elapsed, (walls, elapsed)
