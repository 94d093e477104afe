"""A model's networks as graphs of tensors, for runtimes without aevb: ONNX and TorchScript.

The model's decoder and encoder return torch.distributions objects, which neither exporter can
follow. A graph part is a small module that returns their tensors instead:

* ``decoder``: z (batch, J) → the decoder's mean E[x|z] (batch, D): pixel probabilities for a
  Bernoulli decoder, the Gaussian mean (through its sigmoid where the model has one) otherwise —
  the images ``model.sample`` draws. A full-VB model decodes with its parameters' posterior mean.
* ``encoder``: x (batch, D) → μ(x) and log σ²(x), each (batch, J), of the Gaussian posterior.

The batch dimension is dynamic: a graph traced with one batch size runs any other. A part a
model cannot give as such a graph (a conditional model's networks also take the class label; a
non-Gaussian posterior has no μ and log σ²) is a one-line error.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from ..errors import AevbError

#: The batch size the graphs are traced with; any other runs (the batch dimension is dynamic).
TRACE_BATCH = 2


class DecoderMean(nn.Module):
    """z (batch, J) → E[x|z] (batch, D)."""

    input_names = ("z",)
    output_names = ("mean",)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = model.decoder
        self.input_width = model.config.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mean(z)


class EncoderMoments(nn.Module):
    """x (batch, D) → μ(x) (batch, J), log σ²(x) (batch, J)."""

    input_names = ("x",)
    output_names = ("mean", "log_variance")

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model.encoder, "moments"):
            raise AevbError(
                f"the model's posterior is {model.config.posterior!r}, which has no mean and log-variance "
                "to export; export the decoder, or a model with a Gaussian posterior"
            )
        self.encoder = model.encoder
        self.input_width = model.config.data_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.moments(x)


#: The parts of a model that export, by name.
GRAPH_PARTS: dict[str, type[nn.Module]] = {"decoder": DecoderMean, "encoder": EncoderMoments}


def graph_part(model: nn.Module, part: str) -> nn.Module:
    """The module of ``part`` ("decoder" or "encoder") of ``model``, returning tensors, in
    evaluation mode on the CPU in float32; one-line errors for an unknown part and for a model
    whose part has no such graph."""
    if part not in GRAPH_PARTS:
        raise AevbError(f"unknown part {part!r}; choose one of {', '.join(GRAPH_PARTS)}")
    if model.config.num_classes is not None:
        raise AevbError(
            "a conditional model's networks also take the one-hot class label; exporting one is not supported"
        )
    return GRAPH_PARTS[part](model).to("cpu", torch.float32).eval()


def _example(module: nn.Module) -> torch.Tensor:
    return torch.zeros(TRACE_BATCH, module.input_width)


def onnx_bytes(module: nn.Module) -> bytes:
    """``module`` (a :data:`GRAPH_PARTS` module) as an ONNX model, batch dimension dynamic, through
    torch's TorchScript-based exporter (the ``onnx`` package; no onnxscript)."""
    try:
        import onnx  # noqa: F401  (torch's exporter writes the file through it)
    except ImportError:
        raise AevbError("exporting to ONNX needs the onnx package: pip install 'aevb[onnx]'") from None
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (*module.input_names, *module.output_names)}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated in favour of torch.export's, which needs
        # onnxscript and takes seconds per graph; these graphs have no control flow, where both agree.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (_example(module),),
            buffer,
            dynamo=False,
            input_names=list(module.input_names),
            output_names=list(module.output_names),
            dynamic_axes=dynamic,
        )
    return buffer.getvalue()


def torchscript_bytes(module: nn.Module) -> bytes:
    """``module`` (a :data:`GRAPH_PARTS` module) traced to TorchScript (``torch.jit.load`` reads it);
    the traced shapes are read from the input, so any batch size runs."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # (torch.jit is in maintenance, still supported)
        traced = torch.jit.trace(module, (_example(module),), check_trace=False)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


#: Graph formats by name: what writes them, and their file name suffix.
GRAPH_FORMATS = {"onnx": (onnx_bytes, ".onnx"), "torchscript": (torchscript_bytes, ".pt")}
