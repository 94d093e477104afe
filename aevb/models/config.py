"""The configuration of a variational auto-encoder (paper §3, App. C, §5) and what follows from it
alone: its hidden widths, its number of parameters and the memory it needs, computed before anything
is allocated. :mod:`aevb.models.vae` builds the networks it describes."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import JsonConfig
from ..errors import AevbError
from ..validation import require_count
from .families import check_pair, get_family
from ..memory import FLOAT_BYTES, format_count, require_memory
from .networks import ACTIVATIONS, KERNEL, feature_map_shapes

LIKELIHOODS = ("bernoulli", "gaussian")
ARCHITECTURES = ("mlp", "conv")
DECODER_VARIANCES = ("network", "per-dimension")
DECODER_POSTERIORS = ("point", "gaussian")
INITIALISATIONS = ("normal", "glorot")
PAPER_INIT_STD = 0.1      # §5's N(0, 0.01), read as a variance (module docstring)
# log σ² = B·tanh(raw/B) with B = 30 keeps every variance in (1e-13, 1e13), finite in float32 with
# its inverse, and bends log σ² by under 4% where |log σ²| < 10, where trained VAEs live.
DEFAULT_LOG_VARIANCE_BOUND = 30.0
OUTPUT_MEAN_CLIP = 1e-3   # Burda et al.'s code clips the data mean to [0.001, 0.999] before its logit


@dataclass
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a :class:`VAE`; saved as JSON beside its weights."""

    data_dim: int                  # D, pixels per image
    latent_dim: int = 20           # J = Nz
    hidden_units: int | tuple[int, ...] = 500  # §5: 500 for MNIST, 200 for Frey Face; or one width per
                                               # hidden layer, input side first (the decoder mirrors them)
    hidden_layers: int | None = None   # §5 / App. C: one hidden layer; None: one per width that
                                       # `hidden_units` lists, else 1
    activation: str = "tanh"       # App. C
    likelihood: str = "bernoulli"  # "bernoulli" (binary or grey-level in [0,1]) or "gaussian"
    sigmoid_mean: bool = False     # Gaussian decoder mean through a sigmoid (Frey Face, §5)
    decoder_variance: str = "network"  # Gaussian decoder: log σ² from the network (App. C.2) or
                                       # "per-dimension", a learned vector independent of z
    init: str = "normal"           # "normal": every parameter ~ N(0, init_std²) (§5); "glorot": Glorot-uniform
                                   # weights, zero biases, Bernoulli output bias at the data's logit (Burda et al.)
    init_std: float = PAPER_INIT_STD   # §5: parameters ~ N(0, 0.01), 0.01 the variance
    log_variance_bound: float | None = DEFAULT_LOG_VARIANCE_BOUND  # log σ² of encoder and Gaussian decoder =
                                   # B·tanh(raw/B), so σ² ∈ (e^-B, e^B); None: unbounded, as in the paper
    image_shape: tuple[int, int] | None = None  # for figures and convolutional networks
    architecture: str = "mlp"      # "mlp" (App. C) or "conv": convolutions on image_shape (aevb.models.networks)
    conv_channels: tuple[int, ...] = (32, 64)  # channels of each stride-2 convolution ("conv" only)
    num_classes: int | None = None  # conditional VAE p(x|z,y), q(z|x,y) with y one of this many classes
                                    # (aevb.models.conditional); None: unconditional
    decoder_posterior: str = "point"   # θ, the decoder's parameters: "point" (ML/MAP estimate, §5) or
                                       # "gaussian", a factorised Gaussian q(θ) (full VB, App. F; aevb.models.full_vb)
    decoder_posterior_init_std: float = 0.01   # full VB: σ_θ of q(θ) at initialisation (small against
                                               # the means' init_std; smaller only costs Adagrad steps)
    posterior: str = "gaussian"    # q(z|x) family of §2.4 by name (aevb.models.families); "gaussian" = N(μ, diag σ²)
    prior: str = "gaussian"        # p(z) family by name; "gaussian" = N(0, I) (§3)

    def __post_init__(self) -> None:
        self.data_dim = require_count(self.data_dim, "data_dim")
        self.latent_dim = require_count(self.latent_dim, "latent_dim")
        if self.hidden_layers is None:
            self.hidden_layers = len(self.hidden_units) if isinstance(self.hidden_units, (list, tuple)) else 1
        self.hidden_layers = require_count(self.hidden_layers, "hidden_layers", minimum=0)
        if isinstance(self.hidden_units, (list, tuple)):
            self.hidden_units = tuple(require_count(width, "hidden_units") for width in self.hidden_units)
            if len(self.hidden_units) != self.hidden_layers:
                raise AevbError(f"`hidden_units` gives {len(self.hidden_units)} widths for {self.hidden_layers} "
                                "hidden layers")
        else:
            self.hidden_units = require_count(self.hidden_units, "hidden_units")
        if self.activation not in ACTIVATIONS:
            raise AevbError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.likelihood not in LIKELIHOODS:
            raise AevbError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if self.decoder_variance not in DECODER_VARIANCES:
            raise AevbError(f"unknown decoder variance {self.decoder_variance!r}; choose one of "
                            f"{', '.join(DECODER_VARIANCES)}")
        if not self.init_std > 0:
            raise AevbError(f"`init_std` must be positive, got {self.init_std}")
        if self.init not in INITIALISATIONS:
            raise AevbError(f"unknown init {self.init!r}; choose one of {', '.join(INITIALISATIONS)}")
        if self.init != "normal" and self.decoder_posterior != "point":
            raise AevbError("full variational Bayes (`algorithm` full-vb) starts from the normal init (§5); "
                            f"init {self.init!r} is for point estimates")
        if self.log_variance_bound is not None and not (0 < self.log_variance_bound < float("inf")):
            raise AevbError(f"`log_variance_bound` must be a positive number, got {self.log_variance_bound}")
        if self.decoder_posterior not in DECODER_POSTERIORS:
            raise AevbError(f"unknown decoder posterior {self.decoder_posterior!r}; choose one of "
                            f"{', '.join(DECODER_POSTERIORS)}")
        if not (0 < self.decoder_posterior_init_std < float("inf")):
            raise AevbError(f"`decoder_posterior_init_std` must be a positive number, got {self.decoder_posterior_init_std}")
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)
            # Images are one channel of H × W pixels, flattened to the D columns of a datapoint
            # (aevb.data); a shape of another size would only fail when a figure or sample is drawn.
            if len(self.image_shape) != 2 or min(self.image_shape) < 1:
                raise AevbError(f"`image_shape` must be two positive integers (height, width), got {self.image_shape}")
            if self.image_shape[0] * self.image_shape[1] != int(self.data_dim):
                raise AevbError(f"`image_shape` {self.image_shape[0]}×{self.image_shape[1]} has "
                                f"{self.image_shape[0] * self.image_shape[1]} pixels but `data_dim` is {self.data_dim}")
        if self.architecture not in ARCHITECTURES:
            raise AevbError(f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        if not self.conv_channels or any(c < 1 for c in self.conv_channels):
            raise AevbError(f"`conv_channels` must be positive integers, got {self.conv_channels}")
        if self.architecture == "conv" and self.image_shape is None:
            raise AevbError("`architecture` conv needs image data; these data have no image shape")
        if self.num_classes is not None:
            self.num_classes = int(self.num_classes)
            if self.num_classes < 2:
                raise AevbError(f"a conditional model needs at least 2 classes, got {self.num_classes}")
        if self.num_classes is not None and self.decoder_posterior != "point":
            raise AevbError("full variational Bayes (`algorithm` full-vb) is not available for conditional models")

        if (self.posterior, self.prior) != ("gaussian", "gaussian"):
            check_pair(self.posterior, self.prior)
        self._check_fits_in_memory()

    def _check_fits_in_memory(self) -> None:
        """Refuse, in one line, a model whose parameters alone exceed the host's memory (the model is
        always built on the host, then moved): counted in Python ints before anything is
        allocated, so that hidden-units 10¹⁰ or latent-dim 10³⁰ is an error message, not a C++
        traceback, and hidden-layers 10⁹ is refused at once instead of building layers for hours."""
        needed = model_bytes(self)
        sizes = [f"`data_dim` {format_count(self.data_dim)}", f"`latent_dim` {format_count(self.latent_dim)}"]
        if isinstance(self.hidden_units, tuple):
            sizes.append(f"`hidden_units` {','.join(map(format_count, self.hidden_units))}")
        else:
            sizes.append(f"`hidden_units` {format_count(self.hidden_units)} × `hidden_layers` "
                         f"{format_count(self.hidden_layers)}")
        if self.architecture == "conv":
            sizes.append(f"`conv_channels` {','.join(map(format_count, self.conv_channels))}")
        if self.num_classes is not None:
            sizes.append(f"{format_count(self.num_classes)} classes")
        require_memory(needed, f"a model of {format_count(parameter_count(self), separators=True)} parameters "
                               f"({', '.join(sizes)})", advice="choose smaller sizes")

    def hidden_widths(self) -> tuple[int, ...]:
        """Widths of the encoder's hidden layers, input side first (the decoder uses them reversed)."""
        return hidden_widths(self)


def hidden_widths(config: ModelConfig) -> tuple[int, ...]:
    """Widths of the encoder's hidden layers, input side first (the decoder uses them reversed)."""
    if isinstance(config.hidden_units, tuple):
        return config.hidden_units
    return (int(config.hidden_units),) * config.hidden_layers


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
        encoder_outputs = 2 * latent_dim   # μ and log σ² (App. C.2)
    else:
        encoder_outputs = int(get_family(config.posterior).num_outputs(latent_dim))
    shared_variance = config.likelihood == "gaussian" and config.decoder_variance == "per-dimension"
    decoder_heads = 2 if config.likelihood == "gaussian" and not shared_variance else 1
    runs = _width_runs(config)
    if config.architecture == "conv":
        channels = [int(c) for c in config.conv_channels]
        height, width = feature_map_shapes(config.image_shape, len(channels))[-1]
        kernel = KERNEL * KERNEL
        convolutions = sum(previous * count * kernel + count for previous, count in zip([1, *channels], channels))
        body, features = _stack_parameters(channels[-1] * height * width + extra, runs)
        encoder = convolutions + body + features * encoder_outputs + encoder_outputs
        dense, features = _stack_parameters(latent_dim + extra, runs[::-1])
        feature_map = channels[-1] * height * width
        reversed_channels = channels[::-1]
        transposed = sum(previous * count * kernel + count for previous, count in
                         zip(reversed_channels, [*reversed_channels[1:], decoder_heads]))
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
