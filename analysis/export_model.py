"""The exported model: MR-CCL plus its weighted vote, registered in the MLflow model registry.

MLflow 3's pytorch flavour saves models as `pt2` by default (`torch.export`: a traced graph that
loads without unpickling code, hence without mersweep installed). Two constraints shape the module:

- `torch.export` binds the inputs by the signature of `forward`, and MLflow passes one dynamic-shape
  entry per signature input, so `forward` takes one positional tensor per input (modalities in the
  data's order, then the mask); `*args` would be one input to torch.export and fails.
- the signature is one named tensor per modality, (-1, D_m) float32, plus `mask` (-1, M) bool;
  the output is (-1, C) float32 class probabilities. With several inputs MLflow does not add the
  pyfunc flavour: load the model with `mlflow.pytorch.load_model` and call it positionally in the
  signature's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError
from mer_core.models import MRCCL

MASK_INPUT = "mask"
MAX_INPUTS = 12  # positional tensors `forward` accepts: up to 11 modalities and the mask
EXAMPLE_ROWS = 8  # > 1, so torch.export keeps the batch dimension dynamic


class VotedMRCCL(nn.Module):
    """Modality tensors and a presence mask in, class probabilities of the weighted vote out.

    The vote is `mer_core.voting.vote_probs` written with stacked tensors (its input checks hash
    shapes, which symbolic shapes under torch.export cannot do).
    """

    def __init__(self, model: MRCCL, weights: Mapping[str, float], space: str) -> None:
        super().__init__()
        if len(model.modalities) + 1 > MAX_INPUTS:
            raise ConfigError("data modalities", f"at most {MAX_INPUTS - 1} for an exported model", model.modalities)
        if MASK_INPUT in model.modalities:
            raise ConfigError("data modalities", f"names other than {MASK_INPUT!r} for an exported model", MASK_INPUT)
        if space not in ("logit", "prob"):
            raise ConfigError("voting.space", "logit, prob", space)
        self.model = model
        self.space = space
        self.register_buffer("weights", torch.tensor([float(weights[h]) for h in model.head_names]))  # (H,)

    @property
    def input_names(self) -> tuple[str, ...]:
        return (*self.model.modalities, MASK_INPUT)

    def forward(
        self,
        x0: Tensor,
        x1: Tensor | None = None,
        x2: Tensor | None = None,
        x3: Tensor | None = None,
        x4: Tensor | None = None,
        x5: Tensor | None = None,
        x6: Tensor | None = None,
        x7: Tensor | None = None,
        x8: Tensor | None = None,
        x9: Tensor | None = None,
        x10: Tensor | None = None,
        x11: Tensor | None = None,
    ) -> Tensor:
        """Inputs in `input_names` order: each modality (B, D_m), then the mask (B, M) bool.

        Returns:
            (B, C) class probabilities.
        """
        given = (x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11)[: len(self.input_names)]
        features = dict(zip(self.model.modalities, given[:-1], strict=True))  # m -> (B, D_m)
        out = self.model(features, given[-1])
        stacked = torch.stack([out.logits[h] for h in self.model.head_names]).float()  # (H, B, C)
        w = self.weights.view(-1, 1, 1)  # (H, 1, 1)
        if self.space == "logit":
            return torch.softmax((w * stacked).sum(0), dim=-1)  # (B, C)
        return (w * torch.softmax(stacked, dim=-1)).sum(0) / w.sum()  # (B, C) mixture of the heads


def example_inputs(data: FeatureSet, rows: int = EXAMPLE_ROWS) -> dict[str, np.ndarray]:
    """Named example inputs (the signature's and torch.export's): the first rows of the data."""
    idx = np.arange(min(rows, data.n_samples))
    out = {m: np.ascontiguousarray(data.features[m][idx], dtype=np.float32) for m in data.modalities}
    out[MASK_INPUT] = np.ascontiguousarray(data.mask[idx], dtype=bool)
    return out


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    model_uri: str  # models:/<name>/<version>


def register_model(
    served: VotedMRCCL, data: FeatureSet, *, tracking_uri: str, run_id: str, name: str
) -> RegisteredModel:
    """Log `served` (pt2, with its signature) on run `run_id` and register it as a new version of `name`."""
    import mlflow
    from mlflow.models import infer_signature

    served = served.eval()
    inputs = example_inputs(data)
    with torch.no_grad():
        probs = served(*(torch.from_numpy(inputs[n]) for n in served.input_names)).numpy()  # (rows, C)
    signature = infer_signature(inputs, probs)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # the fluent log_model reads the process-wide URI
    try:
        info = mlflow.pytorch.log_model(
            served,
            name="model",
            registered_model_name=name,
            signature=signature,
            input_example=tuple(inputs[n] for n in served.input_names),
            serialization_format="pt2",
            # Explicit requirements: inferring them would load the model again in a subprocess.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            run_id=run_id,
        )
    finally:
        mlflow.set_tracking_uri(previous)
    version = str(info.registered_model_version)
    return RegisteredModel(name=name, version=version, model_uri=f"models:/{name}/{version}")
