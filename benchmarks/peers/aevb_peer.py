"""aevb itself, timed as a user runs it: training through :meth:`aevb.training.Trainer.fit`
(Algorithm 1 with everything around the step: data order, the optimiser, the running bound), and
the likelihood through :func:`aevb.evaluation.importance_sampling.estimate_log_likelihood`.

``--engine`` picks how gradients are computed (:mod:`aevb.engines`; ``auto``, the default, takes
the native engine on this model), so the benchmark shows what the hand-derived step is worth
against ``--engine autograd`` (``loss.backward()`` on the same estimators). The CPU threads are
the trainer's default: adaptive within ``--threads`` (:mod:`aevb.threads`).
"""

from __future__ import annotations

import argparse

import torch
from common import BenchModel, load_data, log, parse_args, serve

import aevb
from aevb.engines import ENGINE_CHOICES
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.models.vae import VAE, ModelConfig
from aevb.training import TrainConfig, Trainer


def model_and_config(
    shape: BenchModel,
    samples: int,
    engine: str = "auto",
    hidden_units: int | None = None,
    batch_size: int | None = None,
) -> tuple[VAE, TrainConfig]:
    """aevb's model of a benchmark ``shape`` (Frey Face: a Gaussian decoder whose mean goes through a
    sigmoid, §5) and a training configuration of ``samples`` samples, evaluated once at the end."""
    likelihood = {} if shape.likelihood == "bernoulli" else {"likelihood": "gaussian", "sigmoid_mean": True}
    model = VAE(
        ModelConfig(
            data_dim=shape.data_dim,
            latent_dim=shape.latent_dim,
            hidden_units=hidden_units or shape.hidden_units,
            hidden_layers=shape.hidden_layers,
            **likelihood,
        )
    )
    config = TrainConfig(
        batch_size=batch_size or shape.batch_size,
        optimizer=shape.optimizer,
        step_size=shape.step_size,
        max_samples=samples,
        first_eval=samples,
        eval_subset=100,
        engine=engine,
    )
    return model, config


def main(argv=None) -> None:
    engine_parser = argparse.ArgumentParser(add_help=False)
    engine_parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto")
    engine_args, rest = engine_parser.parse_known_args(argv)
    args = parse_args(__doc__.splitlines()[0], rest)
    torch.set_num_threads(args.threads)
    data = torch.from_numpy(load_data(args.data, args.nll_points, args.shape.data_dim))
    model, config = model_and_config(
        args.shape, args.train_samples, engine_args.engine, args.hidden_units, args.batch_size
    )
    trainer = Trainer(model, data, config)
    trainer.fit()  # warm-up

    def train() -> tuple[float, dict]:
        result = trainer.fit()
        metrics = result.history[-1]  # evaluation at the end is not in samples_per_second
        log(f"aevb ({engine_args.engine}) train: {metrics.samples_per_second:.0f} samples/s")
        # the thread counts of this repeat's steps: what the adaptive policy chose (a busy machine)
        return metrics.samples_per_second, {"steps_by_threads": result.steps_by_threads}

    points = data[: args.nll_points]
    estimate_log_likelihood(model, points[:2], num_samples=args.nll_samples)

    def nll() -> float:
        estimate = estimate_log_likelihood(model, points, num_samples=args.nll_samples)
        rate = args.nll_points * args.nll_samples / estimate.seconds
        log(f"aevb nll: {rate:.0f} decoder evaluations/s, mean log p(x) {estimate.mean:.2f}")
        return rate

    engine = trainer.algorithm.engine_used  # the engine auto chose, as summary.json reports it
    serve(
        {"peer": f"aevb {aevb.__version__} ({engine})", "version": torch.__version__},
        {"train": train, "nll": nll},
        args,
    )


if __name__ == "__main__":
    main()
