"""Models out of a run (or of a saved model's directory): a directory to share on the Hugging
Face Hub, or a graph of the decoder or the encoder for runtimes without aevb (ONNX, TorchScript).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AevbError
from ..files import atomic_write_bytes, refuse_link
from ..models.graphs import GRAPH_FORMATS, GRAPH_PARTS, graph_part
from .evaluations import latest_log_likelihood
from .layout import is_run_dir, refuse_to_replace
from .loading import load_run
from .saved_model import is_saved_model, run_record

#: What ``export_run`` writes, by ``format``: a saved model's directory, or a graph file.
EXPORT_FORMATS = ("hub", *GRAPH_FORMATS)


def export_run(
    run_dir: str | os.PathLike,
    *,
    format: str = "onnx",
    part: str | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model of a finished run (or of a saved model's directory) out; returns what was
    written.

    * ``format="hub"``: the directory ``out`` as ``model.save_pretrained`` writes it (model files,
      config.json, and the model card written from the run: its data, architecture, training,
      bounds, the test log p(x) ``aevb evaluate --nll`` kept, the command that trained it). Every
      command that reads a run reads it; ``VAE.from_pretrained(out)`` loads it.
    * ``format="onnx"`` or ``"torchscript"``: the graph of ``part`` (:mod:`aevb.models.graphs`):
      ``"decoder"`` (the default) from z (batch, J) to the decoder's mean (batch, D), or
      ``"encoder"`` from x (batch, D) to μ and log σ² (batch, J each); any batch size. ``out``:
      the file (default: RUN_DIR/PART.onnx or RUN_DIR/PART.pt).

    An ``out`` that exists is replaced only with ``overwrite``; a run directory never is.
    """
    if format not in EXPORT_FORMATS:
        raise AevbError(f"unknown format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if format == "hub":
        if part is not None:
            raise AevbError(f"`part` applies to the graph formats ({', '.join(GRAPH_FORMATS)}); hub saves the model")
        return _export_saved_model(Path(run_dir), out, overwrite)
    part = "decoder" if part is None else part
    if part not in GRAPH_PARTS:
        raise AevbError(f"unknown part {part!r}; choose one of {', '.join(GRAPH_PARTS)}")
    write, suffix = GRAPH_FORMATS[format]
    target = Path(out) if out is not None else Path(run_dir) / f"{part}{suffix}"
    if out is not None:
        refuse_to_replace(target, overwrite)
    else:  # a file in the run directory, which others may share: never written through a link there
        refuse_link(target)
    model, _ = load_run(run_dir, "cpu")
    atomic_write_bytes(target, write(graph_part(model, part)))
    return target


def _export_saved_model(run_dir: Path, out: str | os.PathLike | None, overwrite: bool) -> Path:
    if out is None:
        raise AevbError("`out` names the directory to save the model into")
    target = Path(out)
    if is_run_dir(target):
        raise AevbError(f"`out` {target} holds an aevb run; save the model into another directory")
    if target.exists() and not target.is_dir():
        raise AevbError(f"`out` {target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (overwrite and is_saved_model(target)):
        held = "a saved model" if is_saved_model(target) else "other files"
        advice = "pass `overwrite` to replace it" if held == "a saved model" else "choose an empty or new directory"
        raise AevbError(f"`out` {target} holds {held}; {advice}")
    model, config = load_run(run_dir, "cpu")
    if "saved_model" not in config:
        record = run_record(run_dir, config)
    else:  # its run's record, and the newest log p(x) measured on the saved model since
        record = dict(model.run_record or {})
        measured = latest_log_likelihood(run_dir)
        if record and measured is not None:
            record["test_log_likelihood"] = measured
    model.save_pretrained(target, run_record=record or None)
    return target
