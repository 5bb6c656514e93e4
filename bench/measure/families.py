"""Every measurement family, in the order a model's jobs run: the one place a new family is listed."""
from attacks import ATTACKS
from bench.measure.attack_suite import AttackSuite
from bench.measure.base import Family
from bench.measure.calibration import Calibration
from bench.measure.cifar101 import Cifar101
from bench.measure.corruptions import Corruptions
from bench.measure.crosscheck import CrossCheck
from bench.measure.eps_sweep import EpsSweep
from bench.measure.fp64 import Fp64Check
from bench.measure.natural import Natural
from bench.measure.transfer import Transfer

FAMILIES = (AttackSuite, EpsSweep, Transfer, Fp64Check, CrossCheck, Calibration, Corruptions, Natural, Cifar101)


def by_name() -> dict:
    """The families switched on by name alone (``[eval] measure``, ``--attack NAME``): those
    without a setting of their own, i.e. that keep ``Family.prepare``."""
    return {F.name: F for F in FAMILIES if F.prepare.__func__ is Family.prepare.__func__}


def built_attacks(ev) -> list:
    """The attacks a run builds: those chosen, and those its measurement families run on."""
    return list(dict.fromkeys([*ev.attacks, *(a for F in FAMILIES for a in F.attacks_of(ev))]))


def attack_record_version(record: dict) -> int:
    """The version this code writes a record of an attack, or of a check built on one, at: its
    family's ``version_of`` its identity (the others: 1, their families' versions not being bumped
    yet)."""
    identity = (record.get("n"), record.get("threat"), record.get("view"), record.get("params") or {})
    family = {"pgd_fp64": Fp64Check, "transfer": Transfer, "autoattack_crosscheck": CrossCheck}.get(identity[1])
    if family is None and identity[1] in ATTACKS and record.get("family") == "attack":
        family = AttackSuite  # the eps sweep's records too: its version and rule are the suite's
    return family.version_of(identity) if family else 1


def outdated(record: dict) -> bool:
    """A stored record made by an older revision of its attack (or of the PGD a check is built on)
    than this code's: the grid measures it again on its next run; until then a report says it holds
    numbers this code would not give (the CE attacks' batch-averaged loss, before revision 2)."""
    return record.get("measure_version", 1) < attack_record_version(record)
