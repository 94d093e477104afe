"""Time pythae (github.com/clementchadebec/benchmark_VAE) on the paper's MNIST VAE.

This is the pythae "peer" of the aevb benchmarks. It runs under its own virtual environment
(pythae is not, and must not become, a dependency of aevb) and speaks the harness's protocol on
stdout (see common.py); everything else (pythae's logging, warnings) goes to stderr.

Model, identical to the paper's MNIST model and to aevb's: encoder 784 -> 500 tanh -> two linear
heads (mu, log sigma^2) of size 20; decoder 20 -> 500 tanh -> 784 sigmoid with a Bernoulli
likelihood (pythae's ``reconstruction_loss="bce"``). Both networks are custom pythae
``BaseEncoder`` / ``BaseDecoder`` subclasses plugged into ``pythae.models.VAE``; weights keep
PyTorch's default initialisation (irrelevant to speed).

What is measured:

1. Training throughput, in samples/s. We deliberately use pythae's *own* training loop,
   ``BaseTrainer.train_step`` (one epoch), with Adagrad at learning rate 0.02, because that is what
   a pythae user gets: its per-sample ``Dataset.__getitem__`` + ``DataLoader`` collation of
   ``DatasetOutput`` dicts, callback dispatch and one ``loss.item()`` per minibatch are part of
   the cost. A hand-written loop around pythae's model would time PyTorch, not pythae. One
   untimed warm-up epoch on a small subset comes first; each timed repeat is one epoch over
   exactly ``--train-samples`` rows (the data tiled or cut to that length). The trainer's
   progress-bar and console-printer callbacks are left out (pythae's no-op callback handler
   remains); nothing is saved (its output directory is a temporary one, deleted at the end).
2. Importance-sampled log-likelihood throughput, in decoder evaluations/s, using pythae's
   ``VAE.get_nll`` on the first ``--nll-points`` rows, in eval mode under ``torch.no_grad()``
   (pythae's method does not disable autograd itself; aevb's estimator runs without it, so
   this keeps the comparison about the estimator, not about building unused graphs). Note
   that ``get_nll`` draws ``batch_size`` samples per pass and makes
   ``n_samples // batch_size`` passes (or a single pass of ``batch_size`` samples when
   ``n_samples <= batch_size``); the rate is computed from the number it really draws,
   reported as ``nll_effective_samples``. Its return value is the mean log p(x) in nats (a
   negative number, despite the method's name); it is reported unchanged as ``nll_value``.
3. Peak resident memory of the process (``ru_maxrss``) at the end, in MB.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
from common import DATA_DIM, LATENT_DIM, LEARNING_RATE, load_data, log, parse_args, serve

WARMUP_BATCHES = 10


def quiet_pythae() -> None:
    """pythae's modules give their loggers an explicit INFO level, so raise each one."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)


def build_model(hidden_units: int):
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class MnistEncoder(BaseEncoder):
        """784 -> 500 tanh -> (mu, log sigma^2), two linear heads of size 20."""

        def __init__(self):
            BaseEncoder.__init__(self)
            self.hidden = nn.Linear(DATA_DIM, hidden_units)
            self.mean = nn.Linear(hidden_units, LATENT_DIM)
            self.log_var = nn.Linear(hidden_units, LATENT_DIM)

        def forward(self, x: torch.Tensor) -> ModelOutput:
            h = torch.tanh(self.hidden(x.reshape(x.shape[0], -1)))
            return ModelOutput(embedding=self.mean(h), log_covariance=self.log_var(h))

    class MnistDecoder(BaseDecoder):
        """20 -> 500 tanh -> 784 sigmoid (Bernoulli means)."""

        def __init__(self):
            BaseDecoder.__init__(self)
            self.hidden = nn.Linear(LATENT_DIM, hidden_units)
            self.output = nn.Linear(hidden_units, DATA_DIM)

        def forward(self, z: torch.Tensor) -> ModelOutput:
            h = torch.tanh(self.hidden(z))
            return ModelOutput(reconstruction=torch.sigmoid(self.output(h)))

    config = VAEConfig(input_dim=(DATA_DIM,), latent_dim=LATENT_DIM, reconstruction_loss="bce")
    return VAE(model_config=config, encoder=MnistEncoder(), decoder=MnistDecoder())


def pythae_dataset(rows: np.ndarray):
    from pythae.data.datasets import BaseDataset

    data = torch.from_numpy(np.ascontiguousarray(rows))
    return BaseDataset(data, torch.zeros(data.shape[0]))


def build_trainer(model, train_rows: np.ndarray, batch_size: int, output_dir: str):
    """pythae's BaseTrainer with Adagrad, no eval set, no saving, no progress bar."""
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import CallbackHandler, TrainingCallback

    config = BaseTrainerConfig(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        num_epochs=1,
        optimizer_cls="Adagrad",
        learning_rate=LEARNING_RATE,
        steps_saving=None,
        steps_predict=None,
        no_cuda=True,
    )
    trainer = BaseTrainer(model=model, train_dataset=pythae_dataset(train_rows), training_config=config, callbacks=None)
    trainer.prepare_training()  # seed, optimizer, scheduler (none), empty dir in output_dir
    quiet_pythae()
    # prepare_training adds tqdm's ProgressBarCallback and a console printer; keep only
    # pythae's no-op callback so the dispatch cost stays but nothing is printed.
    trainer.callback_handler = CallbackHandler(callbacks=[TrainingCallback()], model=trainer.model)
    return trainer


def training(model, data: np.ndarray, args: argparse.Namespace, output_dir: str):
    """Warm pythae's trainer up; return a function timing one epoch of ``--train-samples`` rows."""
    train_rows = np.resize(data, (args.train_samples, DATA_DIM))  # tiles rows cyclically
    warmup_rows = train_rows[: min(args.train_samples, WARMUP_BATCHES * args.batch_size)]
    trainer = build_trainer(model, train_rows, args.batch_size, output_dir)
    timed_loader = trainer.train_loader
    trainer.train_loader = trainer.get_train_dataloader(pythae_dataset(warmup_rows))
    trainer.train_step(epoch=1)
    trainer.train_loader = timed_loader
    epochs = iter(range(2, 10**9))

    def train() -> float:
        model.train()
        started = time.perf_counter()
        loss = trainer.train_step(epoch=next(epochs))
        rate = args.train_samples / (time.perf_counter() - started)
        log(f"pythae train: {rate:.0f} samples/s, mean loss {loss:.2f}")
        return rate

    return train


def effective_importance_samples(n_samples: int, batch_size: int) -> int:
    """How many importance samples VAE.get_nll really draws per datapoint."""
    if n_samples <= batch_size:
        return batch_size
    return (n_samples // batch_size) * batch_size


def likelihood(model, data: np.ndarray, args: argparse.Namespace):
    """A function timing one ``get_nll`` over ``--nll-points`` rows, and the samples it draws."""
    points = torch.from_numpy(np.ascontiguousarray(data[: args.nll_points]))
    samples = effective_importance_samples(args.nll_samples, args.nll_batch_size)
    if samples != args.nll_samples:
        log(
            f"warning: get_nll draws {samples} importance samples per datapoint, not "
            f"{args.nll_samples} (batch size {args.nll_batch_size})"
        )
    with torch.no_grad():
        model.eval()
        model.get_nll(points[:1], n_samples=args.nll_batch_size, batch_size=args.nll_batch_size)

    def nll() -> float:
        model.eval()
        with torch.no_grad():
            started = time.perf_counter()
            value = float(model.get_nll(points, n_samples=args.nll_samples, batch_size=args.nll_batch_size))
            rate = args.nll_points * samples / (time.perf_counter() - started)
        log(f"pythae nll: {rate:.0f} decoder evaluations/s, mean log p(x) {value:.2f}")
        return rate

    return nll, samples


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    if args.model != "mnist":
        raise SystemExit("the pythae peer times the MNIST model only (its Gaussian decoder is another model)")
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # anything pythae prints stays off stdout
        torch.set_num_threads(args.threads)
        data = load_data(args.data, args.nll_points)
        import pythae.trainers  # noqa: F401  (registers pythae's loggers so they can be quietened)

        quiet_pythae()
        model = build_model(args.hidden_units)
        with tempfile.TemporaryDirectory(prefix="pythae_peer_") as output_dir:
            train = training(model, data, args, output_dir)
            nll, samples = likelihood(model, data, args)
            info = {
                "peer": f"pythae {importlib.metadata.version('pythae')}",
                "version": torch.__version__,
                "nll_effective_samples": samples,
            }
            serve(info, {"train": train, "nll": nll}, args, stream=stdout)


if __name__ == "__main__":
    main()
