"""Every measurement family, in the order a model's jobs run: the one place a new family is listed."""
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
