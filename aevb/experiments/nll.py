"""The log-likelihood benchmark every VAE paper reports: dynamically binarised MNIST, test log p(x)
by importance sampling with k = 5000 (``aevb reproduce nll``).

Protocol (Burda, Grosse & Salakhutdinov 2015, "Importance Weighted Autoencoders", §5 and Table 1):

* data: the 60,000 MNIST training images, no validation split (their code held out 400 it never
  used), grey levels k/255, a fresh Bernoulli draw of every image each time it is used; the 10,000
  test images binarised once with a fixed seed (as their code does), the same for every model;
* score: log p(x) by importance sampling with the encoder as proposal, k = 5000, on all 10,000 test
  images, with its Monte Carlo standard error (nats per datapoint; the tables print −log p(x)).

Models (:data:`MODELS`):

* ``paper-z20``, ``paper-z50``: the AEVB paper's model (784-500-Nz, one tanh layer) with its §5
  settings: Adagrad, step size chosen from {0.01, 0.02, 0.1}, M = 100, weight decay of a N(0, I)
  prior, N(0, σ²) initialisation; the paper's budget, 10⁸ samples.
* ``iwae-vae``, ``iwae-k5``, ``iwae-k50``: Burda et al.'s one-stochastic-layer architecture
  (784-200-200-50, tanh, both directions) trained as a VAE (estimator B, k = 1) or on the IWAE
  bound with k = 5 or 50, with their Adam schedule: 3^i passes at step size 0.001·10^(−i/7),
  i = 0…7 (3280 passes), minibatches of 20, Glorot initialisation with the output bias at the data
  mean's logit (their code), no weight decay. ``iwae-k50`` is for a GPU (50 decoder passes per
  datapoint): by default it runs only where CUDA is.

``budget`` scales every model's schedule: a number up to 1 is the fraction of its published
number of training samples; a larger one is the number of training samples itself. A shortened
schedule keeps its shape (each stage shortened alike, :class:`aevb.training.optimizers.StagedSchedule`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_json
from ..data.datasets import MNIST_TRAIN_FILE_SIZE
from ..errors import AevbError
from ..evaluation.importance_sampling import PROTOCOL_SAMPLES
from ..runs import DataConfig, ModelSpec, evaluate_run, read_run_config, resolve_device
from ..training import TrainConfig
from ..training.optimizers import IWAE_PASSES
from .registry import Experiment
from .runner import FigureRun, read_summary

IWAE_SAMPLES = sum(IWAE_PASSES) * MNIST_TRAIN_FILE_SIZE  # 3280 passes over 60,000 images
PAPER_SAMPLES = 10**8  # AEVB §5, Fig. 2
IWAE_PIXEL_DIVISOR = 255.0  # Burda et al.'s code reads the IDX files as k/255
EVALUATION_FILE = "nll_evaluation.json"
TABLE_FILE = "nll_binarized_mnist.json"  # the table `aevb reproduce nll` writes into its output directory
# Burda et al. state Adam's ε = 1e-4 for a sum over the minibatch of 20; aevb's loss is the mean,
# whose gradient is 20 times smaller, so the same steps need ε / 20.
IWAE_BATCH_SIZE = 20
IWAE_ADAM = dict(
    optimizer="adam",
    step_size=1e-3,
    optimizer_eps=1e-4 / IWAE_BATCH_SIZE,
    schedule="iwae",
    batch_size=IWAE_BATCH_SIZE,
    prior_precision=0.0,
    # Passes through a fresh permutation each (their code walks one fixed order, never reshuffled:
    # docs/results.md lists it among the differences); the order the published tables were trained in.
    minibatches="shuffled",
)
IWAE_ARCHITECTURE = dict(latent_dim=50, hidden_units=(200, 200), hidden_layers=2, init="glorot")


@dataclass(frozen=True)
class ProtocolModel:
    """One row of the table: a model, how it is trained, and the number published for it."""

    name: str
    description: str
    model_options: dict
    train_options: dict
    full_samples: int  # training samples of the published schedule
    published: float | None = None  # −log p(x), nats (Burda et al. 2015, Table 1); None: none published
    needs_gpu: bool = False  # left out by default on a CPU
    in_table: bool = True  # one of the table's rows (False: a variant for a comparison, run only when named)


MODELS = {
    model.name: model
    for model in (
        ProtocolModel(
            "paper-z20", "AEVB paper's model, 784-500-20, Adagrad (§5)", {"latent_dim": 20}, {}, PAPER_SAMPLES
        ),
        ProtocolModel(
            "paper-z50", "AEVB paper's model, 784-500-50, Adagrad (§5)", {"latent_dim": 50}, {}, PAPER_SAMPLES
        ),
        ProtocolModel(
            "iwae-vae",
            "VAE, 784-200-200-50, Adam schedule (Burda et al.)",
            IWAE_ARCHITECTURE,
            IWAE_ADAM,
            IWAE_SAMPLES,
            published=86.76,
        ),
        ProtocolModel(
            "iwae-k5",
            "IWAE k = 5, 784-200-200-50, Adam schedule (Burda et al.)",
            IWAE_ARCHITECTURE,
            IWAE_ADAM | dict(estimator="IWAE", num_samples=5),
            IWAE_SAMPLES,
            published=85.54,
        ),
        ProtocolModel(
            "iwae-k50",
            "IWAE k = 50, 784-200-200-50, Adam schedule (Burda et al.)",
            IWAE_ARCHITECTURE,
            IWAE_ADAM | dict(estimator="IWAE", num_samples=50),
            IWAE_SAMPLES,
            published=84.78,
            needs_gpu=True,
        ),
        ProtocolModel(
            "iwae-vae-code-adam",
            "VAE as iwae-vae, with the Adam and the rounded schedule of Burda et al.'s code",
            IWAE_ARCHITECTURE,
            IWAE_ADAM | dict(optimizer="adam-iwae-code", optimizer_eps=None, schedule="iwae-code"),
            IWAE_SAMPLES,
            published=86.76,
            in_table=False,
        ),
    )
}


def default_models(gpu: bool) -> tuple[str, ...]:
    return tuple(name for name, model in MODELS.items() if model.in_table and (gpu or not model.needs_gpu))


def budget_samples(budget: float, model: ProtocolModel) -> int:
    """Training samples for ``model`` under ``budget`` (a fraction ≤ 1 of its schedule, or samples)."""
    if not (math.isfinite(budget) and budget > 0):
        raise AevbError(
            f"`budget` must be a positive number (a fraction <= 1 of the schedule, or samples), got {budget}"
        )
    return max(1, round(budget * model.full_samples)) if budget <= 1 else int(round(budget))


@dataclass(frozen=True)
class TestLogLikelihood:
    """The protocol's score of a finished run, written to ``run_dir/nll_evaluation.json`` (picklable,
    so that it runs in the worker that trained the run)."""

    k: int = PROTOCOL_SAMPLES
    points: int | None = None  # None: the whole test set
    seed: int = 0
    device: str = "auto"

    def done(self, run_dir: Path) -> bool:
        try:
            stored = json.loads((Path(run_dir) / EVALUATION_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return stored.get("k") == self.k and stored.get("requested_points") == self.points

    def __call__(self, run_dir: Path, progress: bool = False) -> None:
        result = evaluate_run(
            run_dir,
            split="test",
            num_points=self.points,
            log_likelihood_samples=self.k,
            seed=self.seed,
            device=self.device,
            progress=progress,
        )
        atomic_write_json(Path(run_dir) / EVALUATION_FILE, result | {"k": self.k, "requested_points": self.points})


def specs(
    budget: float,
    data_dir: str | None,
    models: tuple[str, ...] | None = None,
    seed: int = 0,
    k: int = PROTOCOL_SAMPLES,
    points: int | None = None,
    device: str = "auto",
) -> list[FigureRun]:
    """One run per model, each scored by :class:`TestLogLikelihood` when it finishes; ``models``
    by default: every model that ``device`` can train in reasonable time (IWAE k = 50 needs CUDA)."""
    if not models:
        models = default_models(resolve_device(device).type == "cuda")
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        raise AevbError(f"unknown model {unknown[0]!r} for nll; choose from {', '.join(MODELS)}")
    data = DataConfig("mnist", data_dir, pixel_divisor=IWAE_PIXEL_DIVISOR, merge_valid=True)
    runs = []
    for name in models:
        model = MODELS[name]
        samples = budget_samples(budget, model)
        train = TrainConfig(
            **(
                dict(max_samples=samples, seed=seed, binarize="dynamic", evals_per_decade=2, eval_subset=10_000)
                | model.train_options
            )
        )
        runs.append(
            FigureRun(
                name=name,
                data=data,
                model=ModelSpec(**model.model_options),
                train=train,
                final=TestLogLikelihood(k, points, seed, device),
                tags={"model": name, "budget_samples": samples, "budget_fraction": samples / model.full_samples},
            )
        )
    return runs


def table(run_specs: list[FigureRun], out: Path) -> list[dict]:
    """One row per model: budget, wall time, test log p(x) ± Monte Carlo stderr, published value."""
    rows = []
    for spec in run_specs:
        run_dir = out / spec.name
        evaluation = json.loads((run_dir / EVALUATION_FILE).read_text())
        summary = read_summary(run_dir)
        config = read_run_config(run_dir)
        model = MODELS[spec.name]
        rows.append(
            {
                "model": spec.name,
                "description": model.description,
                "budget_samples": spec.tags["budget_samples"],
                "budget_fraction": spec.tags["budget_fraction"],
                "passes": spec.tags["budget_samples"] / MNIST_TRAIN_FILE_SIZE,
                "log_likelihood": evaluation["log_likelihood"],
                "log_likelihood_stderr": evaluation["log_likelihood_stderr"],
                "log_likelihood_spread_stderr": evaluation["log_likelihood_spread_stderr"],
                "negative_log_likelihood": -evaluation["log_likelihood"],
                "test_bound": evaluation["test_bound"],
                "test_bound_stderr": evaluation["test_bound_stderr"],
                "k": evaluation["k"],
                "num_points": evaluation["num_datapoints"],
                "published": model.published,
                "training_seconds": summary["training_seconds"],
                "evaluation_seconds": evaluation["log_likelihood_seconds"],
                "samples_per_second": summary["samples_per_second"],
                "device": config.get("device"),
                "threads": config.get("threads"),
                "seed": config.get("training", {}).get("seed"),
                "created": config.get("created"),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The table as Markdown: −log p(x) in nats, lower is better, with what it was scored on."""
    lines = [
        "| model | training samples (passes, share of schedule) | train time | −log p(x) (IS) | scored on "
        "| test bound | published |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        published = f"{row['published']:.2f}" if row["published"] is not None else "–"
        passes = f"{row['passes']:,.0f}" if row["passes"] >= 10 else f"{row['passes']:.2g}"
        minutes = row["training_seconds"] / 60
        train_time = f"{minutes:,.0f} min" if minutes >= 1 else f"{row['training_seconds']:.0f} s"
        lines.append(
            f"| {row['model']}: {row['description']} | {row['budget_samples']:.3g} ({passes}, "
            f"{100 * row['budget_fraction']:.3g}%) | {train_time} "
            f"| {row['negative_log_likelihood']:.2f} ± {row['log_likelihood_stderr']:.3f} "
            f"| k = {row['k']}, {row['num_points']:,} test images "
            f"| {-row['test_bound']:.2f} | {published} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(run_specs: list[FigureRun], out: Path, budget: float) -> list[Path]:
    rows = table(run_specs, out)
    json_path = out / TABLE_FILE
    atomic_write_json(json_path, {"protocol": PROTOCOL, "budget": budget, "models": rows})
    markdown_path = json_path.with_suffix(".md")
    markdown_path.write_text(markdown(rows))
    return [json_path, markdown_path]


PROTOCOL = (
    "dynamically binarised MNIST (Burda et al. 2015): 60,000 training images, grey levels k/255, "
    "a fresh Bernoulli draw at every use; test log p(x) by importance sampling with the encoder "
    "as proposal on the test images binarised once with a fixed seed; nats per datapoint"
)

EXPERIMENT = Experiment(
    "nll",
    "the log-likelihood benchmark of later work (IWAE protocol)",
    specs,
    write_outputs,
    options=("models", "k", "points"),
    fractional_budget=True,
    takes_device=True,
)


__all__ = [
    "MODELS",
    "ProtocolModel",
    "TestLogLikelihood",
    "budget_samples",
    "default_models",
    "specs",
    "table",
    "write_outputs",
    "EXPERIMENT",
]
