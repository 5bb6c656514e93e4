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
