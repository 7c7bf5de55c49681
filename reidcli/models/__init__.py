"""Re-ID networks (LightMBN, OSNet, ResNet-50, BoT, PCB, MGN), their catalog and weight import."""

from reidcli.models.base import ReIDModel, ReIDOutput
from reidcli.models.catalog import MODEL_BUILDERS, build_model, get_builder
from reidcli.models.complexity import count_macs, count_parameters
from reidcli.models.weights import LoadReport, load_weights

__all__ = [
    "MODEL_BUILDERS",
    "LoadReport",
    "ReIDModel",
    "ReIDOutput",
    "build_model",
    "count_macs",
    "count_parameters",
    "get_builder",
    "load_weights",
]
