"""Whether the model of a configuration can be built, known before anything is allocated.

* the sizes that follow from a :class:`~aevb.models.config.ModelConfig` and the networks' shapes:
  :func:`parameter_count`, :func:`model_bytes` (host memory), and per decoded row
  :func:`hidden_activations_per_row` and :func:`decoder_outputs_per_row` (for memory budgets);
* :func:`check_buildable`: the checks that need more than the configuration's own fields — a
  posterior/prior pair with a finite KL (the family registry) and parameters that fit the host's
  memory. :class:`aevb.models.vae.VAE` runs it first thing, so every model (``VAE(config)``,
  :func:`aevb.models.build.build_model`, a model file being loaded) is refused in one line
  before a layer is allocated; a run's preflight runs it before its run directory is written.

They live here, above the configuration, the networks and the families, rather than in
``ModelConfig.__post_init__``: the configuration then imports none of them, and they can all
name its type without an import circle.
"""

from __future__ import annotations

from ..config import read_from
from ..errors import AevbError
from ..memory import FLOAT_BYTES, format_count, require_memory
from .config import ModelConfig, hidden_widths
from .families import PAPER_POSTERIOR, PAPER_PRIOR, check_pair, get_family
from .networks import KERNEL, feature_map_shapes


def check_buildable(config: ModelConfig, where: str | None = None) -> None:
    """A one-line AevbError unless the model of ``config`` can be built: its posterior and prior
    are known families whose KL(q ‖ p) is finite (:func:`aevb.models.families.check_pair`), and
    its parameters fit in the host's memory (:func:`require_model_memory`). Allocates nothing.
    ``where`` (a file, a section) says where the configuration was read, as in
    ``ModelConfig.from_dict``: the error then names the setting there rather than as a flag."""
    try:
        if (config.posterior, config.prior) != (PAPER_POSTERIOR, PAPER_PRIOR):
            check_pair(config.posterior, config.prior)
        require_model_memory(config)
    except AevbError as error:
        if where is None:
            raise
        raise read_from(where, error) from None


def require_model_memory(config: ModelConfig) -> None:
    """Refuse, in one line, a model whose parameters alone exceed the host's memory (the model is
    always built on the host, then moved): counted in Python ints before anything is
    allocated, so that hidden-units 10¹⁰ or latent-dim 10³⁰ is an error message, not a C++
    traceback, and hidden-layers 10⁹ is refused at once instead of building layers for hours."""
    needed = model_bytes(config)
    sizes = [f"`data_dim` {format_count(config.data_dim)}", f"`latent_dim` {format_count(config.latent_dim)}"]
    if isinstance(config.hidden_units, tuple):
        sizes.append(f"`hidden_units` {','.join(map(format_count, config.hidden_units))}")
    else:
        sizes.append(
            f"`hidden_units` {format_count(config.hidden_units)} × `hidden_layers` {format_count(config.hidden_layers)}"
        )
    if config.architecture == "conv":
        sizes.append(f"`conv_channels` {','.join(map(format_count, config.conv_channels))}")
    if config.num_classes is not None:
        sizes.append(f"{format_count(config.num_classes)} classes")
    require_memory(
        needed,
        f"a model of {format_count(parameter_count(config), separators=True)} parameters ({', '.join(sizes)})",
        advice="choose smaller sizes",
    )


#: Host memory of one hidden layer's modules (nn.Linear and its activation) apart from the parameters:
#: Python objects and tensor headers; counted below what was measured (docs/performance.md), as the
#: estimates that refuse a size are lower bounds.
LAYER_OVERHEAD_BYTES = 4096


def _stack_parameters(in_features: int, runs: list[tuple[int, int]]) -> tuple[int, int]:
    """Parameters of a stack of Linear layers (weights and biases) from ``in_features``, the
    layers given as runs (width, count) so that a billion equal layers cost one multiplication;
    returns the count and the width of the last layer's output."""
    total, width = 0, in_features
    for units, count in runs:
        if count > 0:
            total += width * units + units + (count - 1) * (units * units + units)
            width = units
    return total, width


def _width_runs(config: ModelConfig) -> list[tuple[int, int]]:
    """The encoder's hidden widths as runs (width, count), input side first, without building a
    tuple of ``hidden_layers`` entries."""
    if isinstance(config.hidden_units, tuple):
        return [(int(width), 1) for width in config.hidden_units]
    return [(int(config.hidden_units), int(config.hidden_layers))]


def parameter_count(config: ModelConfig) -> int:
    """Number of parameters (scalars) of ``build_model(config)``: encoder, decoder (twice for full
    VB, whose q(θ) keeps a log σ_θ per decoder parameter) and a per-dimension log-variance.
    Computed from the configuration alone, as a Python int of any size, allocating nothing."""
    extra = int(config.num_classes or 0)
    data_dim, latent_dim = int(config.data_dim), int(config.latent_dim)
    if config.posterior == "gaussian":
        encoder_outputs = 2 * latent_dim  # μ and log σ² (App. C.2)
    else:
        encoder_outputs = int(get_family(config.posterior).num_outputs(latent_dim))
    shared_variance = config.likelihood == "gaussian" and config.decoder_variance == "per-dimension"
    decoder_heads = 2 if config.likelihood == "gaussian" and not shared_variance else 1
    runs = _width_runs(config)
    if config.architecture == "conv":
        channels = [int(c) for c in config.conv_channels]
        height, width = feature_map_shapes(config.image_shape, len(channels))[-1]
        kernel = KERNEL * KERNEL
        colours = int(config.channels)
        convolutions = sum(previous * count * kernel + count for previous, count in zip([colours, *channels], channels))
        body, features = _stack_parameters(channels[-1] * height * width + extra, runs)
        encoder = convolutions + body + features * encoder_outputs + encoder_outputs
        dense, features = _stack_parameters(latent_dim + extra, runs[::-1])
        feature_map = channels[-1] * height * width
        reversed_channels = channels[::-1]
        transposed = sum(
            previous * count * kernel + count
            for previous, count in zip(reversed_channels, [*reversed_channels[1:], decoder_heads * colours])
        )
        decoder = dense + features * feature_map + feature_map + transposed
    else:
        body, features = _stack_parameters(data_dim + extra, runs)
        encoder = body + features * encoder_outputs + encoder_outputs
        body, features = _stack_parameters(latent_dim + extra, runs[::-1])
        decoder = body + features * decoder_heads * data_dim + decoder_heads * data_dim
    if shared_variance:
        decoder += data_dim
    if config.decoder_posterior == "gaussian":
        decoder *= 2
    return encoder + decoder


def model_bytes(config: ModelConfig) -> int:
    """Host memory the model of ``config`` takes at least, bytes: float32 parameters and the
    modules of its hidden layers (encoder and decoder)."""
    layers = sum(count for _, count in _width_runs(config))
    return FLOAT_BYTES * parameter_count(config) + 2 * layers * LAYER_OVERHEAD_BYTES


def hidden_activations_per_row(config: ModelConfig) -> int:
    """Floats of hidden activations the decoder holds per decoded row (for memory budgets): its
    hidden layers, and for ``conv`` its feature maps."""
    floats = sum(hidden_widths(config))
    if config.architecture == "conv":
        shapes = feature_map_shapes(config.image_shape, len(config.conv_channels))[1:]
        floats += sum(channels * height * width for channels, (height, width) in zip(config.conv_channels, shapes))
    return floats


def decoder_outputs_per_row(config: ModelConfig) -> int:
    """Floats the decoder outputs per decoded row: D logits, or D means and D log-variances."""
    network_variance = config.likelihood == "gaussian" and config.decoder_variance == "network"
    return (2 if network_variance else 1) * int(config.data_dim)
