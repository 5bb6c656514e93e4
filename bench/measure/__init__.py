"""Measurements: one module per family (attack suite, eps sweep, transfer, fp64 check, AutoAttack
cross-check, calibration, corruptions, natural transforms, CIFAR-10.1), each a ``Family``
(bench/measure/base.py) listed once in bench/measure/families.py. adversarial.py is the attack
loop they share with the trainer's held-out check."""
