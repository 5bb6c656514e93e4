"""Architectures and the model registry. Importing this package registers every architecture."""
from models.registry import ARCHS, REGIMES, ModelSpec, parse_name, register_arch  # noqa: F401
from models import archs as _archs  # noqa: F401  (registers the architectures)
from models.archs import Classifier, build_model  # noqa: F401
