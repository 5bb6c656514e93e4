"""--model file:PATH with the architectures a researcher brings: the README's command lines run as
written (a fastnet the test trains, a torchvision MobileNet), a timm model loads, the leaderboard
says where each model came from, and the new bad inputs stop with one line."""
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from bench.errors import BenchError
from bench.profiles import Recipe
from bench.run import main
from bench.train import train
from models import parse_name
from models.external import file_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def _save(model, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _readme_commands():
    section = README.read_text().split("## Audit your own model", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines()
            if re.match(r"\s+python -m bench\.run --model file:my_", line)]


def test_the_readme_command_lines_run_as_written(mini_data, mini_root, mini_cache, tmp_path, monkeypatch, capsys):
    commands = _readme_commands()
    assert len(commands) == 2 and "torchvision:" in commands[1]
    monkeypatch.chdir(tmp_path)  # the README's relative file names
    net = train(parse_name("fastnet_T1"), Recipe(epochs=2, batch_size=64, lr=0.1), mini_data, torch.device("cpu"))
    _save(net.model, tmp_path / "my_net.safetensors")
    torch.manual_seed(0)
    _save(torchvision.models.get_model("mobilenet_v3_small", num_classes=10), tmp_path / "my_mobilenet.safetensors")
    # the README's lines, on the mini tree and the smoke profile's budget
    budget = ["--profile", "smoke", "--data-root", str(mini_root), "--cache", str(mini_cache), "--n-test", "100",
              "--tables-only", "--results", str(tmp_path / "r"), "--no-progress"]
    assert main(shlex.split(commands[0])[3:] + budget) == 0, commands[0]
    # an untrained network has no NLL-optimal T (its fit ran to the search's bound, 0.001, which its
    # scaled view then used): refused in one line, before anything is written; with a T it runs
    capsys.readouterr()
    assert main(shlex.split(commands[1])[3:] + budget) == 2, commands[1]
    assert "my_mobilenet: the temperature cannot be estimated" in capsys.readouterr().err
    assert main(shlex.split(commands[1])[3:] + budget + ["--temperature", "1"]) == 0, commands[1]
    board = pd.read_csv(tmp_path / "r" / "leaderboard.csv").set_index("model")
    assert set(board.index) == {"my_net", "my_mobilenet"}
    assert set(board.source) == {"file"}
    assert (board.loc["my_net", "T_source"], board.loc["my_mobilenet", "T_source"]) == ("estimated", "given")
    assert board.loc["my_mobilenet", "arch"] == "torchvision:mobilenet_v3_small"
    # the trained fastnet is a model; the untrained MobileNet guesses
    assert board.loc["my_net", "clean"] > 0.2 and board.loc["my_mobilenet", "clean"] < 0.3
    assert board.loc["my_net", "robust_min"] <= board.loc["my_net", "pgd_raw@8/255"]
    capsys.readouterr()
    # bad input for the new architectures: one line, exit 2, nothing written
    torch.manual_seed(0)
    hundred = _save(torchvision.models.get_model("mobilenet_v3_small", num_classes=100), tmp_path / "c100.safetensors")
    for args, phrase in [
        ([f"file:{hundred}", "--arch", "torchvision:mobilenet_v3_small"], "predicts 100 classes"),
        (["file:my_mobilenet.safetensors", "--arch", "torchvision:mobilenet_v9"], "has no model 'mobilenet_v9'"),
        (["file:my_mobilenet.safetensors", "--arch", "torchvision:resnet18"], "does not fit --arch torchvision:resnet18"),
        (["file:my_net.safetensors", "--arch", "timm:no_such_net"], "has no model 'no_such_net'"),
    ]:
        out = tmp_path / "bad"
        code = main(["--model", *args, *budget[:-3], "--results", str(out), "--no-progress"])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and phrase in errors[0], (args, errors)
        assert not out.exists()


def test_a_timm_model_loads_from_its_weights(tmp_path):
    timm = pytest.importorskip("timm")  # robustbench brings it; --arch timm:NAME says to install it otherwise
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    spec = file_spec(f"file:{_save(model, tmp_path / 'r10.safetensors')}", "timm:resnet10t", 2.0)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(spec.model(x), model(x))
    assert (spec.name, spec.num_classes, spec.T, spec.arch) == ("r10", 10, 2.0, "timm:resnet10t")
    with pytest.raises(BenchError, match="does not fit --arch timm:resnet14t"):
        file_spec(f"file:{tmp_path / 'r10.safetensors'}", "timm:resnet14t", None)
