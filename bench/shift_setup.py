"""Which shift measurements a run makes, and the data they need, decided once per run from the
profile: the corruption source (real CIFAR-10-C or generated), the subset, CIFAR-10.1 if found.
The runner asks it for each model's jobs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from bench.data import Dataset, Split, resolve_data_root, stratified_indices
from bench.errors import BenchError
from bench.evaluate_shifts import (CorruptedSets, corruption_params, evaluate_corruptions, evaluate_natural,
                                  evaluate_test_set)
from bench.shift_data import (CIFAR10C_URL, download_cifar101, find_cifar101, find_cifar10c, load_cifar101,
                              search_roots)

Job = Tuple[str, List[tuple], Callable[[], list]]  # (family, planned (n, threat, view, params), run)


@dataclass
class ShiftSetup:
    split: Optional[Split] = None  # the subset the corruptions and natural transforms use
    corrupted: Optional[CorruptedSets] = None
    corruption_names: Tuple[str, ...] = ()
    severities: Tuple[int, ...] = ()
    natural: Tuple[str, ...] = ()
    cifar101: Optional[Tuple] = None  # (images, labels) on the device
    batch_size: int = 500

    @classmethod
    def prepare(cls, plan, data: Dataset, split: Split, log) -> "ShiftSetup":
        ev = plan.profile.eval
        setup = cls(batch_size=ev.batch_size, natural=tuple(ev.natural), severities=tuple(ev.severities))
        if ev.corruptions == "none" and not ev.natural and not ev.shifts:
            return setup
        idx = stratified_indices(split.labels, ev.shift_n or ev.n, ev.subset_seed)
        setup.split = split.subset(idx)
        roots = search_roots(resolve_data_root(plan.data_root, plan.cache_dir), plan.cache_dir)
        if ev.corruptions != "none":
            from attacks.corruptions import BENCHMARK, CORRUPTIONS, EXTRA
            names = tuple(ev.corruption_names) or tuple(BENCHMARK) + tuple(EXTRA)
            unknown = [n for n in names if n not in CORRUPTIONS]
            if unknown:
                raise BenchError(f"unknown corruption {', '.join(unknown)}; known: {', '.join(CORRUPTIONS)}")
            setup.corruption_names = names
            real = find_cifar10c(roots) if ev.corruptions in ("auto", "real") else None
            if real is not None and data.name != "cifar10":
                # CIFAR-10-C is made from the original test set, in its order: pairing it with
                # another copy's images or order would mismatch images and labels.
                if ev.corruptions == "real":
                    raise BenchError(f"real CIFAR-10-C at {real} pairs only with the original cifar10 data, "
                                     f"not {data.name}: use corruptions = \"generated\"")
                real = None
            if ev.corruptions == "real" and real is None:
                raise BenchError(f"corruptions = \"real\" but no CIFAR-10-C/labels.npy under "
                                 f"{', '.join(map(str, roots))}: download {CIFAR10C_URL}")
            setup.corrupted = CorruptedSets(setup.split, idx.to(split.labels.device), seed=ev.subset_seed,
                                            real_folder=real, test_labels=data.test.labels if real else None)
            log(f"corruptions: {len(names)} x severities {list(setup.severities)} on {len(idx)} images, "
                f"{setup.corrupted.source}{f' from {real}' if real else ''}")
        if "cifar10.1" in ev.shifts and data.num_classes != 10:
            log(f"shifts: CIFAR-10.1 skipped: it is a CIFAR-10 test set and {data.name} has {data.num_classes} classes")
        elif "cifar10.1" in ev.shifts:
            folder = find_cifar101(roots)
            if folder is None and plan.fetch_shift_sets:  # asked for by name: fetch it or stop
                log(f"shifts: CIFAR-10.1 not found under {', '.join(map(str, roots))}; downloading it")
                folder = download_cifar101(plan.cache_dir / "downloads")
            if folder is None:
                log(f"shifts: CIFAR-10.1 not found under {', '.join(map(str, roots))}; skipped "
                    f"(put cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy in one of them, or run "
                    f"--attack cifar10.1 online to download them)")
            else:
                x, y = load_cifar101(folder)
                setup.cifar101 = (x.to(split.labels.device), y.to(split.labels.device))
                log(f"shifts: CIFAR-10.1 v6 from {folder} ({len(y)} images)")
        return setup

    def jobs(self, model, spec, plan) -> List[Job]:
        out: List[Job] = []
        if self.corrupted is not None:
            n, src = len(self.split), self.corrupted.source
            planned = [(n, "corruption", "none", corruption_params(c, s, src))
                       for c, s in [("none", 0)] + [(c, s) for c in self.corruption_names for s in self.severities]]
            out.append(("corruptions", planned, lambda: evaluate_corruptions(
                model, self.corrupted, self.corruption_names, self.severities, self.batch_size, plan.progress,
                desc=f"corrupt {spec.name}")))
        if self.natural:
            from attacks.natural import NATURAL, WORST_GRID_ROTATIONS, WORST_GRID_SHIFTS
            n = len(self.split)
            planned = [(n, t, "none", {"magnitude": m}) for t in self.natural if t != "worst_grid"
                       for m in NATURAL[t].magnitudes]
            if "worst_grid" in self.natural:
                planned.append((n, "worst_grid", "none", {"rotations": list(WORST_GRID_ROTATIONS),
                                                          "shifts": list(WORST_GRID_SHIFTS)}))
            out.append(("natural", planned, lambda: evaluate_natural(
                model, self.split, self.natural, self.batch_size, plan.progress, desc=f"natural {spec.name}")))
        if self.cifar101 is not None:
            x, y = self.cifar101
            params = {"version": "v6"}
            out.append(("cifar10.1", [(len(y), "cifar10.1", "none", params)],
                        lambda: [evaluate_test_set(model, "cifar10.1", x, y, self.batch_size, params)]))
        return out
