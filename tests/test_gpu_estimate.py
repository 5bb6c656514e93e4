"""scripts/gpu_estimate.py's refusals: a bad flag is one line and exit 2 before any proxy model
trains (a negative --rate printed negative seconds; an unknown family was measured as nothing)."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_estimate():
    spec = importlib.util.spec_from_file_location("gpu_estimate", REPO / "scripts" / "gpu_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, phrase", [
    (["--rate", "-1"], "--rate must be positive, got -1"),
    (["--rate", "nan"], "--rate must be positive, got nan"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--n", "1"], "--n must be >= 2, got 1"),
    (["--target-clean", "93"], "--target-clean is a clean accuracy in (0, 1]"),
    (["--proxy-T", "1,x"], "--proxy-T expects a comma list of temperatures"),
    (["--proxy-T", "0"], "temperature must be a positive finite number"),
    (["--proxy", "nosuch"], "unknown model 'nosuch_T1'"),
    (["--families", "attacks,nosuch"], "--families nosuch: not a measurement family; one of attacks, eps sweep"),
    (["--profile", "nosuch"], "unknown profile 'nosuch'"),
])
def test_a_bad_flag_is_one_line_and_exit_2(args, phrase, tmp_path, capsys):
    assert gpu_estimate().main([*args, "--cache", str(tmp_path / "cache")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and phrase in err and err.count("\n") == 1, err
    assert not (tmp_path / "cache").exists()  # refused before a proxy was trained into it


def test_proxies_at_no_clean_accuracy_stop_before_any_measurement(tmp_path, monkeypatch, capsys):
    """Proxies that learned nothing leave no image to attack, and the scale to the real models'
    clean accuracy divided by their 0%: a ZeroDivisionError after every family had been measured.
    Now one line once they are trained, before the first family runs."""
    import bench.grid.jobs

    class Family:
        def planned(self, spec, ctx):
            return True

        def run(self, *args):
            raise AssertionError("measured after the proxies came out at 0% clean")

    class Context:
        def __init__(self, plan, log):
            self.families = {"attacks": Family()}

        def model(self, spec, log):
            return "key", None, {"test_acc": 0.0}, {}

    monkeypatch.setattr(bench.grid.jobs, "Context", Context)
    assert gpu_estimate().main(["--cache", str(tmp_path / "cache"), "--proxy-T", "1,50"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err == "error: proxies reached 0% clean (fastnet_T1, fastnet_T50): raise --n or use another --proxy-T\n"
