"""Threats a trained model is evaluated under: adversarial attacks (adversarial.py) on the views of
views.py. Corruptions and natural perturbations join here behind the same evaluation interface."""
from attacks.adversarial import ATTACKS, AttackConfig, format_eps, make_attack, parse_eps  # noqa: F401
from attacks.views import VIEWS, make_view, view_divisor  # noqa: F401
