"""Detectors of the group's notes behind one registry: ``build_model(model_config({"name": ...}))``.

Registered names (each with its own config class in its model file): ``resnet18`` (raw / dct / dft
input), ``xception`` (timm's legacy Xception, F3Net's baseline), ``f3net`` (Qian et al. ECCV 2020;
modes fad / lfs / both / mix, ``reduced`` Xception, optional multi-task mask decoder), ``npr`` (Tan
et al. CVPR 2024), ``cnndetection`` (Wang et al. CVPR 2020), ``clip_probe`` (UniversalFakeDetect's
linear probe), ``lgrad`` (Tan et al. CVPR 2023). See :mod:`.registry` for the forward contract.
"""

from .common import LoadReport, count_parameters, load_weights, read_state_dict
from .registry import (
    MODEL_CAPABILITIES,
    MODEL_REGISTRY,
    ModelConfig,
    build_model,
    model_config,
    model_settings,
    register_model,
    registered_names,
)

__all__ = [
    "MODEL_CAPABILITIES",
    "MODEL_REGISTRY",
    "LoadReport",
    "ModelConfig",
    "build_model",
    "model_config",
    "model_settings",
    "count_parameters",
    "load_weights",
    "read_state_dict",
    "register_model",
    "registered_names",
]
