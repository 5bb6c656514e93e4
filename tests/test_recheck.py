"""bench.tools.recheck: a stored attack measurement run again on its kept checkpoint, compared
image by image, on a real grid run over the mini tree."""
import json

from bench.run import main as run_main
from bench.tools.recheck import main as recheck


def test_recheck_repeats_a_stored_measurement_and_names_a_changed_verdict(mini_root, tmp_path, capsys, monkeypatch):
    prof = tmp_path / "p.toml"
    prof.write_text('keep_checkpoints = true\n[recipe]\nepochs = 1\nbatch_size = 64\ntrain_subset = 256\n'
                    '[eval]\nn = 40\nbatch_size = 20\nattacks = ["apgd_t"]\nviews = ["raw"]\n'
                    '[attack.apgd_t]\nsteps = 5\nn_target_classes = 2\neps = "1/255"\n'
                    '[[grid]]\narch = "fastnetw8"\nT = [1]\n')
    res = tmp_path / "res"
    assert run_main(["--profile", str(prof), "--model", "all", "--data-root", str(mini_root), "--results", str(res),
                     "--cache", str(tmp_path / "cache"), "--no-progress", "--tables-only"]) == 0
    args = ["--results", str(res), "--attack", "apgd_t", "--profile", str(prof), "--data-root", str(mini_root)]
    capsys.readouterr()
    assert recheck(args) == 0
    out = capsys.readouterr().out
    assert "1 run again: 0 with a changed verdict" in out
    # a model that has no such records is named, with those that have (it said "no apgd_t records")
    assert recheck(args + ["--model", "fastnetw8_T1", "fastnet_T1"]) == 2
    assert capsys.readouterr().err == (f"error: --model fastnet_T1: no apgd_t records in {res / 'records'}; "
                                       f"measured: fastnetw8_T1\n")

    path = next(p for p in (res / "records").glob("*.json") if json.loads(p.read_text())["threat"] == "apgd_t")
    rec = json.loads(path.read_text())
    flipped = format(int(rec["bits"], 16) ^ 1, f"0{len(rec['bits'])}x")  # the last image's verdict, inverted
    path.write_text(json.dumps(dict(rec, bits=flipped)))
    assert recheck(args) == 1
    out = capsys.readouterr().out
    assert "1 run again: 1 with a changed verdict" in out and "another machine" not in out
    # the same change, recorded on another CPU: the line says the machine alone can account for it
    path.write_text(json.dumps(dict(rec, bits=flipped, device="cpu Some Other CPU (AVX2, 2 threads)")))
    assert recheck(args) == 1
    assert "1 of the changed were measured on another machine or thread count than this" in capsys.readouterr().out

    # a record without the backward passes or the wall time (made before they were recorded): "-"
    # there, not a KeyError, whose exit status 1 read as a changed verdict
    metrics = {k: v for k, v in rec["metrics"].items() if k != "backward_per_image"}
    path.write_text(json.dumps(dict({k: v for k, v in rec.items() if k != "wall_s"}, metrics=metrics)))
    assert recheck(args) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  fastnetw8_T1"))
    assert row[6] == "-" and row[7] != "-" and row[8] == "-", row
    # an unexpected error is its traceback and exit 3: Python's own exit status for it is 1
    import bench.tools.recheck
    monkeypatch.setattr(bench.tools.recheck, "evaluate", lambda *a, **k: 1 / 0)
    assert recheck(args) == 3
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and err.splitlines()[-1].startswith("error: the recheck stopped"), err
    monkeypatch.undo()

    (sidecar,) = (res / "checkpoints").glob("*.json")
    sidecar.write_text("[]")  # valid JSON, not a sidecar: one line, not an AttributeError
    assert recheck(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: checkpoint sidecar {sidecar} is a JSON list"), err
