"""The MR-CCL model: encoders, fusion operators and heads (both registries), and `build_model`."""

from mer_core.models.encoders import (
    FastEncoderLayer,
    InvariantEncoder,
    SpecificEncoder,
    ValueAttention,
    largest_divisor,
    to_reference_state_dict,
)
from mer_core.models.fusion import FUSIONS, FusionOp
from mer_core.models.heads import HEADS
from mer_core.models.label_fusion import LabelGuidedFusion
from mer_core.models.mrccl import FUSION_HEAD, MRCCL, ModelOutput, build_model

__all__ = [
    "FUSIONS",
    "FUSION_HEAD",
    "HEADS",
    "MRCCL",
    "FastEncoderLayer",
    "FusionOp",
    "InvariantEncoder",
    "LabelGuidedFusion",
    "ModelOutput",
    "SpecificEncoder",
    "ValueAttention",
    "build_model",
    "largest_divisor",
    "to_reference_state_dict",
]
