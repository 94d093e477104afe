"""The configuration of a variational auto-encoder (paper §3, App. C, §5): its fields, each checked
against its own domain when the configuration is made, and its hidden widths.

What needs more than the fields — whether the posterior/prior pair has a finite KL (the family
registry), the parameters' count and memory (the networks' shapes) — is
:mod:`aevb.models.buildable`, checked where a model is built (:func:`~aevb.models.buildable.check_buildable`,
which every model's constructor runs before allocating anything). So this module imports no
other part of the models, and they may all name its type. :mod:`aevb.models.vae` builds the
networks it describes."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import JsonConfig
from ..errors import AevbError
from ..image_shape import image_channels, normalize_image_shape

LIKELIHOODS = ("bernoulli", "gaussian")
ARCHITECTURES = ("mlp", "conv")
DECODER_VARIANCES = ("network", "per-dimension")
DECODER_POSTERIORS = ("point", "gaussian")
INITIALISATIONS = ("normal", "anglepy", "glorot")
PAPER_INIT_STD = 0.01  # §5's N(0, 0.01), a standard deviation in the authors' code (anglepy VAE_Z_X.init_w(std=1e-2))
# log σ² = B·tanh(raw/B) with B = 30 keeps every variance in (1e-13, 1e13), finite in float32 with
# its inverse, and bends log σ² by under 4% where |log σ²| < 10, where trained VAEs live.
DEFAULT_LOG_VARIANCE_BOUND = 30.0
OUTPUT_MEAN_CLIP = 1e-3  # Burda et al.'s code clips the data mean to [0.001, 0.999] before its logit


@dataclass
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a :class:`VAE`; saved as JSON beside its weights.

    Making one checks each field's domain (a count, a name among the choices, shapes that agree
    with each other); the family pair and the host's memory are checked when a model is built
    (:func:`aevb.models.buildable.check_buildable`)."""

    data_dim: int  # D, pixels per image
    latent_dim: int = 20  # J = Nz
    # §5: 500 for MNIST, 200 for Frey Face; or one width per hidden layer, input side first (the decoder mirrors them)
    hidden_units: int | tuple[int, ...] = 500
    # §5 / App. C: one hidden layer; None: one per width that `hidden_units` lists, else 1
    hidden_layers: int | None = None
    activation: str = "tanh"  # App. C
    likelihood: str = "bernoulli"  # "bernoulli" (binary or grey-level in [0,1]) or "gaussian"
    sigmoid_mean: bool = False  # Gaussian decoder mean through a sigmoid (Frey Face, §5)
    # Gaussian decoder: log σ² from the network (App. C.2) or "per-dimension", a learned vector independent of z
    decoder_variance: str = "network"
    # "normal": every parameter ~ N(0, init_std²) (§5); "anglepy": as the authors' code, N(0, init_std²) but the
    # encoder's log σ² head and the decoder's output biases at zero; "glorot": Glorot-uniform weights, zero biases,
    # Bernoulli output bias at the data's logit (Burda et al.)
    init: str = "anglepy"  # the paper is silent on which parameters start where: the authors' code (docs/results.md)
    init_std: float = PAPER_INIT_STD  # §5: parameters ~ N(0, 0.01), 0.01 the standard deviation (the authors' code)
    # log σ² of encoder and Gaussian decoder = B·tanh(raw/B), so σ² ∈ (e^-B, e^B); None: unbounded, as in the paper
    log_variance_bound: float | None = DEFAULT_LOG_VARIANCE_BOUND
    # (H, W) grey or (C, H, W) colour, rows flattened channels first (aevb.image_shape); for figures and convolutions
    image_shape: tuple[int, ...] | None = None
    architecture: str = "mlp"  # "mlp" (App. C) or "conv": convolutions on image_shape (aevb.models.networks)
    conv_channels: tuple[int, ...] = (32, 64)  # channels of each stride-2 convolution ("conv" only)
    # conditional VAE p(x|z,y), q(z|x,y) with y one of this many classes (aevb.models.conditional); None: unconditional
    num_classes: int | None = None
    # θ, the decoder's parameters: "point" (ML/MAP estimate, §5) or "gaussian", a factorised Gaussian q(θ) (full VB,
    # App. F; aevb.models.full_vb)
    decoder_posterior: str = "point"
    # full VB: σ_θ of q(θ) at initialisation (small against the means' init_std; smaller only costs Adagrad steps)
    decoder_posterior_init_std: float = 0.01
    posterior: str = "gaussian"  # q(z|x) family of §2.4 by name (aevb.models.families); "gaussian" = N(μ, diag σ²)
    prior: str = "gaussian"  # p(z) family by name; "gaussian" = N(0, I) (§3)

    def __post_init__(self) -> None:
        # validation and the activations import torch: imported here, when a configuration is made,
        # so that the command line can quote the defaults above without importing torch.
        from ..validation import require_count
        from .activations import ACTIVATIONS

        self.data_dim = require_count(self.data_dim, "data_dim")
        self.latent_dim = require_count(self.latent_dim, "latent_dim")
        if self.hidden_layers is None:
            self.hidden_layers = len(self.hidden_units) if isinstance(self.hidden_units, (list, tuple)) else 1
        self.hidden_layers = require_count(self.hidden_layers, "hidden_layers", minimum=0)
        if isinstance(self.hidden_units, (list, tuple)):
            self.hidden_units = tuple(require_count(width, "hidden_units") for width in self.hidden_units)
            if len(self.hidden_units) != self.hidden_layers:
                raise AevbError(
                    f"`hidden_units` gives {len(self.hidden_units)} widths for {self.hidden_layers} hidden layers"
                )
        else:
            self.hidden_units = require_count(self.hidden_units, "hidden_units")
        if self.activation not in ACTIVATIONS:
            raise AevbError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.likelihood not in LIKELIHOODS:
            raise AevbError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if self.decoder_variance not in DECODER_VARIANCES:
            raise AevbError(
                f"unknown decoder variance {self.decoder_variance!r}; choose one of {', '.join(DECODER_VARIANCES)}"
            )
        if not self.init_std > 0:
            raise AevbError(f"`init_std` must be positive, got {self.init_std}")
        if self.init not in INITIALISATIONS:
            raise AevbError(f"unknown init {self.init!r}; choose one of {', '.join(INITIALISATIONS)}")
        if self.init == "glorot" and self.decoder_posterior != "point":
            raise AevbError(
                "full variational Bayes (`algorithm` full-vb) starts from §5's normal init (`init` normal or "
                "anglepy); init 'glorot' is for point estimates"
            )
        if self.log_variance_bound is not None and not (0 < self.log_variance_bound < float("inf")):
            raise AevbError(f"`log_variance_bound` must be a positive number, got {self.log_variance_bound}")
        if self.decoder_posterior not in DECODER_POSTERIORS:
            raise AevbError(
                f"unknown decoder posterior {self.decoder_posterior!r}; choose one of {', '.join(DECODER_POSTERIORS)}"
            )
        if not (0 < self.decoder_posterior_init_std < float("inf")):
            raise AevbError(
                f"`decoder_posterior_init_std` must be a positive number, got {self.decoder_posterior_init_std}"
            )
        # Checked here, or a shape of another size would only fail when a figure or sample is drawn.
        self.image_shape = normalize_image_shape(self.image_shape, self.data_dim)
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

    @property
    def channels(self) -> int | None:
        """C, the channels of each image: 1 (grey), 3 (RGB) or 4 (RGBA); None without an image shape."""
        return None if self.image_shape is None else image_channels(self.image_shape)

    def hidden_widths(self) -> tuple[int, ...]:
        """Widths of the encoder's hidden layers, input side first (the decoder uses them reversed)."""
        return hidden_widths(self)


def hidden_widths(config: ModelConfig) -> tuple[int, ...]:
    """Widths of the encoder's hidden layers, input side first (the decoder uses them reversed)."""
    if isinstance(config.hidden_units, tuple):
        return config.hidden_units
    return (int(config.hidden_units),) * config.hidden_layers
