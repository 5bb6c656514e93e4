"""A caller's own network as a model of the grid: loaded, never trained, named by the caller and
told apart by the sha256 of its weights (two different networks never share records)."""
from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import load_file
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from bench.atomic import sha256_files
from bench.errors import BenchError
from models.archs import Normalize, build_model
from models.registry import ARCHS, LoadedSpec, parse_name

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes (torch sets words of its messages in bold)

PREFIX = "file:"


@dataclass(frozen=True)
class ExternalSpec(LoadedSpec):
    regime: str = "external"
    model: Any = field(default=None, compare=False, repr=False)  # the torch.nn.Module, in this process
    weights_sha256: str = ""
    T_source: str = "given"  # "given", or "estimated" by post-hoc temperature scaling (T None until then)
    arch: str = "external"
    source: str = "python"  # "python", or the weights file it was loaded from
    num_classes: Optional[int] = None  # what its head predicts, when known before the data is


def weights_sha256(model: torch.nn.Module) -> str:
    """One sha256 over the state dict (names, dtypes, shapes and values, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_file_name(name: str) -> bool:
    return str(name).startswith(PREFIX)


# The entries a training script's checkpoint keeps its weights under, beside the optimizer, the
# epoch and the like (torch.save({"state_dict": model.state_dict(), "epoch": ...})); the one that
# holds a state dict is read, as RobustBench's loader reads its zoo's checkpoints
WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "state")


def _tensors(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def read_state_dict(path: Path) -> dict:
    """A state dict from safetensors, or from a .pt/.pth with ``weights_only=True`` (tensors and
    containers, never a pickled module or code). A training checkpoint's weights are read from
    its one WRAPPERS entry that holds them, and DataParallel's ``module.`` prefix is dropped."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise BenchError(f"{path}: {what} (--model file:PATH names a safetensors or .pt state dict)")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise BenchError(f"{path}: give a .safetensors, .pt or .pth state dict")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    # bytes that are not a torch file fail anywhere in the unpickler (a KeyError for a memo it
    # never wrote, an EOFError, ...); the restricted unpickler never runs what it reads
    except Exception as e:  # noqa: BLE001
        why = ANSI.sub("", (str(e).splitlines() or [""])[0])[:160]
        raise BenchError(f"{path} is not a state dict this harness reads ({type(e).__name__}: {why}); save "
                         f"model.state_dict() with safetensors or torch.save, not the pickled model") from None
    if isinstance(state, dict) and not _tensors(state):
        inner = [k for k in WRAPPERS if _tensors(state.get(k))]
        if len(inner) > 1:
            raise BenchError(f"{path} holds state dicts under {', '.join(map(repr, inner))}: save the one to "
                             f"evaluate alone, e.g. torch.save(checkpoint[{inner[0]!r}], 'weights.pt')")
        if inner:
            state = state[inner[0]]
    if not _tensors(state):
        what = (f"a dict of {', '.join(map(repr, list(state)[:5]))}" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise BenchError(f"{path} holds {what}, not a state dict of tensors: save model.state_dict()")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # a DataParallel or DDP model's names
        consume_prefix_in_state_dict_if_present(state, "module.")
    return state


def build_arch(arch: str, num_classes: int) -> torch.nn.Module:
    """``arch`` with fresh weights and ``num_classes`` outputs: a registry architecture, or a
    timm/torchvision model name behind its prefix (built without pretrained weights: nothing is
    downloaded, the caller's file supplies every weight)."""
    if arch.startswith("torchvision:"):
        import torchvision  # ~2 s to import (torch._dynamo): only for a torchvision architecture
        name = arch[len("torchvision:"):]
        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError:
            raise BenchError(f"--arch {arch}: torchvision {torchvision.__version__} has no model {name!r}; "
                             f"see torchvision.models.list_models()") from None
    if arch.startswith("timm:"):
        try:
            # timm's hrnet module calls torch.jit.interface at import, which torch 2.14 deprecates:
            # a warning about timm's code that the user of --arch can do nothing about
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="`torch.jit.interface` is deprecated", category=FutureWarning)
                import timm  # noqa: PLC0415 - an optional dependency
        except ImportError:
            raise BenchError(f"--arch {arch} needs timm: pip install timm") from None
        name = arch[len("timm:"):]
        if not timm.is_model(name):
            raise BenchError(f"--arch {arch}: timm {timm.__version__} has no model {name!r}; see timm.list_models()")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        spec = parse_name(f"{arch}_T1")
    except BenchError:
        raise BenchError(f"--arch {arch!r} is not a registry architecture ({', '.join(ARCHS)}) nor "
                         f"timm:NAME or torchvision:NAME") from None
    return build_model(spec, num_classes)


def _mismatch(own: dict, state: dict):
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    return missing, unexpected, shapes


def file_spec(name: str, arch: Optional[str], temperature: Optional[float], mean: Optional[Sequence[float]] = None,
              std: Optional[Sequence[float]] = None) -> ExternalSpec:
    """``file:PATH`` as a model of the grid: the weights read and loaded into ``arch`` now, so that
    every problem stops the run before anything is written. The class count is read off the
    weights (the tensors whose first dimension is the only thing that differs from a 10-class
    build). The model is named by the file's stem and told apart by the file's sha256."""
    if not name[len(PREFIX):].strip():  # Path("") is the working directory: "is a folder" would puzzle
        raise BenchError(f"{name!r} names no file: give --model file:PATH, e.g. file:weights.safetensors")
    path = Path(name[len(PREFIX):]).expanduser()
    if not arch:
        raise BenchError(f"{name}: give --arch, the architecture its weights fit: a registry one "
                         f"({', '.join(ARCHS)}), timm:NAME or torchvision:NAME")
    state = read_state_dict(path)
    model = build_arch(arch, 10)
    own = model.state_dict()
    missing, unexpected, shapes = _mismatch(own, state)
    heads = {int(state[k].shape[0]) for k in shapes
             if own[k].shape[0] == 10 and state[k].shape[1:] == own[k].shape[1:]}
    num_classes = 10
    if shapes and not missing and not unexpected and len(heads) == 1 and len(shapes) <= 2:
        num_classes = heads.pop()
        model = build_arch(arch, num_classes)
        own = model.state_dict()
        missing, unexpected, shapes = _mismatch(own, state)
    if missing or unexpected or shapes:
        raise BenchError(f"{path} does not fit --arch {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"other shapes {shapes[:3]}")
    model.load_state_dict(state)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    sha = sha256_files([path])
    if mean is not None:
        check_normalised_once(model, f"--arch {arch}", "--mean/--std")
        model = torch.nn.Sequential(Normalize(mean, std), model)
        sha = hashlib.sha256(f"{sha}:{list(mean)}:{list(std)}".encode()).hexdigest()
    return ExternalSpec(name=stem if stem[:1].isalpha() else f"m{stem}", T=temperature, model=model.eval(),
                        weights_sha256=sha, arch=arch, source=str(path), num_classes=num_classes)


def check_normalised_once(model: torch.nn.Module, what: str, given: str) -> None:
    """A registry network normalises its input in its first layer (models.archs.Normalize): a mean
    and std given for it too normalised twice, and every number followed the shifted input (17.7%
    clean accuracy became 14.3%) without a word."""
    if any(isinstance(m, Normalize) for m in model.modules()):
        raise BenchError(f"{what} normalises its input itself (its first layer, models.archs.Normalize): "
                         f"drop {given}, which would normalise it twice")


def _dtype_advice(model: torch.nn.Module, x: torch.Tensor) -> str:
    """What to do when a model's weights are not in the dtype the harness feeds (a half-precision
    or float64 network fails on float32 pixels with a bare dtype mismatch)."""
    fed = str(x.dtype).removeprefix("torch.")
    other = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()} - {fed})
    if not other:
        return ""
    return (f": its parameters are {' and '.join(other)} and the harness feeds {fed} pixels; give it model.float(), "
            f"or cast the input to its dtype inside its forward")


def check_contract(name: str, model: torch.nn.Module, x: torch.Tensor, num_classes: int, data_name: str) -> None:
    """A network from outside the harness, on ``x`` (a few test images in [0, 1], on its device),
    against what every measurement assumes of it: raw logits of shape (N, classes), finite, the
    same twice, its input left as it was given and in the autograd graph. Each failure is one
    sentence that says what to change."""
    given = x.clone()
    with torch.no_grad():
        try:
            out = model(x)
        except Exception as e:  # noqa: BLE001 - whatever the model raises, the user needs one line
            raise BenchError(f"{name}: the model fails on a batch of {len(x)} images of shape {tuple(x.shape)} in "
                             f"[0, 1] ({type(e).__name__}: {e}){_dtype_advice(model, x)}") from None
        if not torch.equal(x, given):  # an attack's iterate, or the images it checks, would change under it
            raise BenchError(f"{name}: the model changes its input in place (e.g. x.sub_(mean) in its forward): every "
                             f"attack and accuracy would see other images than it was given; use out-of-place "
                             f"operations (x = x - mean), or give the normalisation to the harness (mean=/std=, "
                             f"--mean/--std)")
        if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).flatten(1).any(1).sum()) if out.dim() else len(x)
            raise BenchError(f"{name}: the model returns NaN or infinite logits on {bad} of {len(x)} test images: "
                             f"every loss and accuracy on them would be undefined; fix its weights or its forward")
        if isinstance(out, torch.Tensor) and not torch.equal(out, model(x)):
            raise BenchError(f"{name}: the model's output changes between two passes on the same input (noise or "
                             f"dropout at eval time): an attack on a random function measures its luck, not "
                             f"robustness; make it deterministic in eval mode, or average its randomness away (EOT)")
        if not isinstance(out, torch.Tensor) or out.shape != (len(x), num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise BenchError(f"{name}: the model must return logits of shape (N, {num_classes}) for {data_name}, "
                             f"got {shape}")
        out = out.double()
        if (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(x), dtype=out.dtype), atol=1e-4):
            raise BenchError(f"{name}: the model returns probabilities (rows sum to 1): give it raw logits (drop the "
                             f"final softmax), or every attack would see a second softmax")
        if (out <= 0).all() and torch.allclose(out.logsumexp(1), torch.zeros(len(x), dtype=out.dtype), atol=1e-4):
            raise BenchError(f"{name}: the model returns log-probabilities (log-sum-exp 0): give it raw logits (drop "
                             f"the final log_softmax)")
    # every white-box attack and the masking diagnostics take a loss's gradient with respect to
    # the input, which torch cannot give where the forward cut the input out of the graph
    x = given.requires_grad_(True)
    with torch.enable_grad():
        try:
            out = model(x)
        except RuntimeError as e:  # e.g. an in-place op on the input, which autograd refuses on a leaf
            raise BenchError(f"{name}: the model fails when its input requires a gradient, as every gradient attack's "
                             f"does ({type(e).__name__}: {str(e).splitlines()[0]}): use out-of-place operations on "
                             f"the input (x = x.clamp(0, 1), not x.clamp_(0, 1))") from None
        grad = torch.autograd.grad(out.sum(), x, allow_unused=True)[0] if out.requires_grad else None
    if grad is None:
        raise BenchError(f"{name}: the model's logits have no gradient with respect to its input (a .detach(), "
                         f"torch.no_grad() or a step like a cast to integers in its forward): every gradient attack "
                         f"would stall on it and report robustness by construction (obfuscated gradients, Athalye "
                         f"et al. 2018); give that step a differentiable stand-in on the backward pass (BPDA)")
