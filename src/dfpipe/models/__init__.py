"""Detectors of the notes behind one registry: ``build_model(ModelConfig(...))``.

Registered names: ``resnet18`` (raw / dct / dft input), ``xception`` (timm legacy_xception, F3Net's
baseline), ``f3net`` (Qian et al. ECCV 2020; modes fad / lfs / both / mix, ``reduced`` Xception,
optional multi-task mask decoder), ``npr`` (Tan et al. CVPR 2024). See :mod:`.registry` for the
forward contract.
"""

from .common import LoadReport, count_parameters, load_weights, read_state_dict
from .registry import MODEL_CAPABILITIES, MODEL_REGISTRY, ModelConfig, build_model, register_model, registered_names

__all__ = [
    "MODEL_CAPABILITIES",
    "MODEL_REGISTRY",
    "LoadReport",
    "ModelConfig",
    "build_model",
    "count_parameters",
    "load_weights",
    "read_state_dict",
    "register_model",
    "registered_names",
]
