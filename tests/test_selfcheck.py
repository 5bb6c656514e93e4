"""The masking audit's known-answer battery: each case's verdict is the expected one."""
from pathlib import Path

import pytest
import torch

from bench.profiles import Recipe
from bench.tools.selfcheck import base_recipe, main, run_battery, table
from tests.conftest import TINY_MODEL, TINY_RECIPE


def test_known_answer_battery(mini_root, mini_cache, mini_data, tiny_model, tmp_path):
    # the cases' base model is tiny_model's run (the same spec and recipe, all 2,000 training
    # images either way): trained once per `make test`, not again here
    spec, base = tiny_model
    assert spec.name == TINY_MODEL and len(mini_data.train) == 2000
    assert base_recipe(mini_data) == Recipe(**TINY_RECIPE, train_subset=2000)
    # One thread, as every `make test` worker has: the trained cases' weights (and the verdicts
    # near a threshold) depend on the thread count, and two threads on a worker that shares the
    # cores with two others cost this test 5x its wall time. Both counts pass (README's table)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcomes = run_battery(str(mini_root), n=100, cache=str(mini_cache), results=str(tmp_path / "r"), base=base)
    finally:
        torch.set_num_threads(before)
    print(table(outcomes))
    wrong = [(o.case.name, o.case.expected, o.verdict, o.reasons) for o in outcomes if not o.ok]
    assert not wrong, table(outcomes)
    # the audits wrote their tables, not the plots and pages (pages=False)
    assert (tmp_path / "r" / "leaderboard.csv").is_file() and not (tmp_path / "r" / "index.html").exists()
    refused = {o.case.name: o.reasons for o in outcomes if o.verdict == "refused"}
    assert "probabilities" in refused["returns softmax probabilities"]
    assert "changes between two passes" in refused["random at eval (Gaussian noise on the input)"]
    assert "no gradient with respect to its input" in refused["input quantised outside autograd (no input gradient)"]


def test_a_bad_image_count_is_one_line_before_any_training(mini_root, tmp_path, monkeypatch, capsys):
    # checked against the data once, not by each case's audit after the base model's training
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # the command's cache, not the checkout's
    for n in ("1", "501"):  # the mini tree has 500 test images
        assert main(["--data-root", str(mini_root), "--n", n]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --n must lie in 2..500 (the test images), got {n}\n"
        assert not (tmp_path / "cache").exists()  # stopped before the decoded images were written


def test_the_battery_leaves_no_folder_behind(tmp_path, monkeypatch):
    """Without --results each case's audit wrote into a tempfile.mkdtemp() nobody removed: a
    folder per case in /tmp after every run. Now one temporary folder, removed after the battery,
    also when a case raises; each case still in a folder of its own."""
    import tempfile
    from types import SimpleNamespace

    import bench.tools.selfcheck as selfcheck
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data = SimpleNamespace(test=[0] * 500)
    monkeypatch.setattr(selfcheck, "load_dataset", lambda *a, **k: data)
    seen = []

    def audit(model, results, **kwargs):
        Path(results).mkdir(parents=True)
        seen.append(Path(results))
        if len(seen) == 3:
            raise RuntimeError("a case that crashed")
        return SimpleNamespace(row=SimpleNamespace(masking="none", masking_reasons=""))

    monkeypatch.setattr(selfcheck, "audit", audit)
    cases = [selfcheck.Case(f"case {i}", "none", lambda m, d: m) for i in range(2)]
    outcomes = run_battery(n=100, cases=cases, base=torch.nn.Identity())
    assert [o.verdict for o in outcomes] == ["none", "none"] and len(set(seen)) == 2
    assert list(scratch.iterdir()) == []
    with pytest.raises(RuntimeError):
        run_battery(n=100, cases=cases * 2, base=torch.nn.Identity())
    assert list(scratch.iterdir()) == []


def test_a_refusal_passes_only_for_its_own_reason():
    """Any refusal passed a case expected "refused": with the audit failing on its data, the three
    refusal cases passed and the battery exited 0, their checks never run."""
    from bench.tools.selfcheck import CASES, Outcome
    refused = [c for c in CASES if c.expected == "refused"]
    assert len(refused) == 3 and all(c.because for c in refused)
    for case in refused:
        assert not Outcome(case, "refused", "data_root /nope: no CIFAR-10 here").ok
    reasons = {"returns softmax probabilities": "the model returns probabilities (rows sum to 1): give it raw logits",
               "random at eval (Gaussian noise on the input)":
                   "the model's output changes between two passes on the same input",
               "input quantised outside autograd (no input gradient)":
                   "the model's logits have no gradient with respect to its input"}  # the audit's own lines
    assert all(Outcome(c, "refused", reasons[c.name]).ok for c in refused)


def test_a_battery_that_crashes_exits_3_not_1(monkeypatch, capsys):
    """A crash exited 1, the status of a wrong verdict: a script could not tell the two apart."""
    import bench.tools.selfcheck as selfcheck

    def crash(*args, **kwargs):
        raise RuntimeError("shape mismatch in a case")
    monkeypatch.setattr(selfcheck, "run_battery", crash)
    assert selfcheck.main(["--n", "100"]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: shape mismatch in a case" in err and "exit 3" in err.splitlines()[-1]
