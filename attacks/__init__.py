"""Threats a trained model is evaluated under: adversarial attacks (adversarial.py) on the views of
views.py. Corruptions and natural perturbations join here behind the same evaluation interface."""
from attacks.adversarial import (ATTACKS, HEADLINE_EPS, AttackConfig, format_eps, make_attack,  # noqa: F401
                                 parse_eps)
from attacks.views import VIEWS, make_view, view_divisor  # noqa: F401
