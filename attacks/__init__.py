"""Threats a trained model is evaluated under: adversarial attacks (registry.py, built from
adversarial.py, apgd.py and torchattacks) on the views of views.py. Corruptions and natural
perturbations join here behind the same evaluation interface."""
from attacks.registry import (ATTACKS, HEADLINE_EPS, AttackConfig, format_eps, make_attack,  # noqa: F401
                             parse_eps)
from attacks.views import VIEWS, make_view, view_divisor  # noqa: F401
