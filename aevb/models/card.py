"""A saved model's card (README.md): what the model is and, when it comes from a run, what that
run recorded — its data, training, bounds, the log p(x) measured on it and the command that
trained it. Every line is a recorded fact; what was not recorded is left out, never a placeholder.

The run's record is plain JSON (:func:`aevb.runs.record.run_record` gathers it; a saved model
keeps it in model.json): ``data`` and ``training`` as the run's config.json has them,
``algorithm``, ``command``, ``created``, ``aevb_version``, ``summary`` (samples, epochs, the final
bounds, the step size, seconds), ``test_log_likelihood`` (the newest kept ``aevb evaluate --nll``
on the test split) and, for a model taken from a checkpoint, ``checkpoint`` (samples, steps).
"""

from __future__ import annotations

from .buildable import parameter_count
from .config import ModelConfig

#: The Hub's metadata of every aevb model card (its YAML header).
CARD_TAGS = ("aevb", "variational-autoencoder", "vae", "pytorch")


def model_card(config: ModelConfig, record: dict | None, *, name: str = "DIRECTORY") -> str:
    """The card of a model of ``config`` (Markdown with the Hub's YAML header), ``record`` being
    what its run recorded (None: a model with no run behind it, whose card says only what the
    model is). ``name``: how the usage lines call the saved directory."""
    record = record or {}
    data = record.get("data") or {}
    sections = [
        _header(),
        _title(config, data),
        _usage(name, record),
        _data_section(data),
        _architecture_section(config),
        _training_section(record),
        _results_section(record),
        _reproduce_section(record),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header() -> str:
    tags = "\n".join(f"- {tag}" for tag in CARD_TAGS)
    return f"---\nlibrary_name: aevb\ntags:\n{tags}\n---"


def _title(config: ModelConfig, data: dict) -> str:
    trained_on = f" trained on {data.get('name') or data.get('dataset')}" if data else ""
    kind = "conditional variational auto-encoder" if config.num_classes is not None else "variational auto-encoder"
    return (
        f"# A {kind}{trained_on}, {config.latent_dim}-dimensional latent space\n\n"
        f"A {kind} (Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014) saved by "
        "aevb: weights in `model.safetensors`, configuration in `model.json` "
        "(no pickle)."
    )


def _usage(name: str, record: dict) -> str:
    evaluate = (
        f"aevb evaluate {name} --nll       # bound and log p(x) on the data it was trained on\n"
        if record.get("data")
        else ""
    )
    return (
        "## Use\n\n"
        "```python\n"
        "from aevb import VAE\n\n"
        f'model = VAE.from_pretrained("{name}")   # a local directory or a Hub repository\n'
        "images = model.sample(16)               # E[x|z], z ~ p(z): (16, D)\n"
        "```\n\n"
        "```sh\n"
        f"aevb sample {name} --out samples.png\n"
        f"{evaluate}"
        f"aevb export {name} --format onnx --part decoder -o decoder.onnx\n"
        "```"
    )


def _data_section(data: dict) -> str:
    if not data:
        return ""
    rows = [("data set", data.get("name") or data.get("dataset"))]
    if data.get("source"):
        rows.append(("source", data["source"]))
    sizes = [f"{data[f'{split}_size']:,} {split}" for split in ("train", "valid", "test") if f"{split}_size" in data]
    if sizes:
        rows.append(("datapoints", ", ".join(sizes)))
    if data.get("train_limit") is not None:
        rows.append(("training points used", f"the first {data['train_limit']:,}"))
    if data.get("merge_valid"):
        rows.append(("validation split", "merged into the training split"))
    if data.get("pixel_divisor") is not None:
        rows.append(("pixel scaling", f"grey level k → k / {data['pixel_divisor']:g}"))
    return "## Data\n\n" + _table(rows)


def _architecture_section(config: ModelConfig) -> str:
    if isinstance(config.hidden_units, tuple):
        hidden = ", ".join(map(str, config.hidden_units)) + " units"
    else:
        hidden = f"{config.hidden_layers} × {config.hidden_units} units"
    likelihood = {
        "bernoulli": "Bernoulli (pixel probabilities, App. C.1)",
        "gaussian": "Gaussian (mean"
        + (" through a sigmoid" if config.sigmoid_mean else "")
        + f", {config.decoder_variance} variance, App. C.2)",
    }[config.likelihood]
    rows = [
        (
            "data dimension D",
            f"{config.data_dim}"
            + (f" ({' × '.join(map(str, config.image_shape))} images)" if config.image_shape else ""),
        ),
        ("latent dimension J", str(config.latent_dim)),
        (
            "networks",
            f"{config.architecture}, hidden layers of {hidden}, {config.activation}"
            + (
                f", convolution channels {', '.join(map(str, config.conv_channels))}"
                if config.architecture == "conv"
                else ""
            ),
        ),
        ("encoder q(z \\| x)", f"{config.posterior} posterior"),
        ("prior p(z)", config.prior),
        ("decoder p(x \\| z)", likelihood),
        ("parameters", f"{parameter_count(config):,}"),
    ]
    if config.num_classes is not None:
        rows.append(("conditioned on", f"a one-hot label of {config.num_classes} classes"))
    if config.decoder_posterior != "point":
        rows.append(("decoder parameters", f"{config.decoder_posterior} posterior q(θ) (full VB, App. F)"))
    return "## Architecture\n\n" + _table(rows)


def _training_section(record: dict) -> str:
    training, summary = record.get("training") or {}, record.get("summary") or {}
    if not training and not summary:
        return ""
    rows = []
    if record.get("algorithm"):
        rows.append(("algorithm", record["algorithm"]))
    if training.get("estimator"):
        rows.append(("estimator", f"{training['estimator']}, L = {training.get('num_samples', 1)}"))
    if training.get("optimizer"):
        rows.append(("optimizer", f"{training['optimizer']}, minibatches of {training.get('batch_size')}"))
    if training.get("binarize") == "dynamic":
        rows.append(("binarisation", "dynamic: a fresh Bernoulli draw of every image at every use"))
    step_size = summary.get("step_size", training.get("step_size"))
    if step_size is not None:
        chosen = (
            f" (chosen from {', '.join(map(str, training['step_size_candidates']))})"
            if training.get("step_size") is None and training.get("step_size_candidates")
            else ""
        )
        rows.append(("step size", f"{step_size}{chosen}"))
    checkpoint = record.get("checkpoint")
    if checkpoint:
        rows.append(("samples seen", f"{checkpoint['samples']:,} (the checkpoint at {checkpoint['steps']:,} steps)"))
    elif summary.get("samples") is not None:
        epochs = f", {summary['epochs']:.3g} epochs" if summary.get("epochs") is not None else ""
        rows.append(("samples seen", f"{summary['samples']:,}{epochs}"))
    if summary.get("training_seconds") is not None and not checkpoint:
        rows.append(("training time", f"{summary['training_seconds']:.0f} s"))
    if training.get("seed") is not None:
        rows.append(("seed", str(training["seed"])))
    return "## Training\n\n" + _table(rows)


def _results_section(record: dict) -> str:
    summary = {} if record.get("checkpoint") else record.get("summary") or {}
    rows = [
        (f"{split} lower bound", f"{summary[f'{split}_bound']:.2f}")
        for split in ("train", "valid", "test")
        if summary.get(f"{split}_bound") is not None
    ]
    nll = None if record.get("checkpoint") else record.get("test_log_likelihood")
    if nll:
        error = f" ± {nll['log_likelihood_stderr']:.2f}" if nll.get("log_likelihood_stderr") is not None else ""
        points = f" on {nll['num_datapoints']:,} points" if nll.get("num_datapoints") else ""
        rows.append(
            (
                "test log p(x)",
                f"{nll['log_likelihood']:.2f}{error} (importance sampling, k = {nll['log_likelihood_samples']}{points})",
            )
        )
    if not rows:
        return ""
    subset = (record.get("training") or {}).get("eval_subset")
    points = f" (the bounds on at most {subset:,} points of each split)" if subset else ""
    return f"## Results\n\nNats per datapoint, measured by aevb on the run's final model{points}.\n\n" + _table(rows)


def _reproduce_section(record: dict) -> str:
    lines = []
    if record.get("command"):
        lines.append(f"Trained by\n\n```sh\n{record['command']}\n```")
    made = [
        f"aevb {record['aevb_version']}" if record.get("aevb_version") else "",
        f"on {record['created']}" if record.get("created") else "",
    ]
    if any(made):
        lines.append("with " + " ".join(part for part in made if part) + ".")
    return "## Reproduce\n\n" + "\n\n".join(lines) if lines else ""


def _table(rows: list[tuple[str, object]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)
