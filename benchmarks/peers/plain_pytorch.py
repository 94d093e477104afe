"""A plain PyTorch training loop of the paper's VAEs, written the way the PyTorch examples write
one (github.com/pytorch/examples, vae/main.py): a Dataset and a shuffling DataLoader, an nn.Module
with one nn.Linear per layer, a loss function with binary cross-entropy on sigmoid outputs (MNIST)
or a Gaussian log-density with a sigmoid mean (Frey Face, ``--model frey``) plus the closed-form
KL, ``zero_grad``/``backward``/``step`` and ``loss.item()`` per minibatch. Only the sizes
(784-500-20 or 560-200-20, tanh, §5; 784-200-200-50 for ``--model burda``) and the optimiser
(Adagrad, §5; Adam for ``burda``) are the papers'.

This is the baseline a user would write in an afternoon; the benchmark reports aevb's speed as a
multiple of it.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from common import BenchModel, load_data, log, parse_args, serve
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class VAE(nn.Module):
    def __init__(self, shape: BenchModel, hidden_units: int):
        super().__init__()
        self.data_dim, self.gaussian = shape.data_dim, shape.likelihood == "gaussian"

        def hidden(in_features: int) -> nn.Sequential:  # the tanh layers of one direction
            layers = []
            for index in range(shape.hidden_layers):
                layers += [nn.Linear(in_features if index == 0 else hidden_units, hidden_units), nn.Tanh()]
            return nn.Sequential(*layers)

        self.encoder = hidden(shape.data_dim)
        self.fc21 = nn.Linear(hidden_units, shape.latent_dim)
        self.fc22 = nn.Linear(hidden_units, shape.latent_dim)
        self.decoder = hidden(shape.latent_dim)
        self.fc4 = nn.Linear(hidden_units, shape.data_dim)
        if self.gaussian:  # the decoder's log-variance
            self.fc5 = nn.Linear(hidden_units, shape.data_dim)

    def encode(self, x):
        h1 = self.encoder(x)
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = self.decoder(z)
        if self.gaussian:
            return torch.sigmoid(self.fc4(h3)), self.fc5(h3)
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, self.data_dim))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}


def loss_function(recon_x, x, mu, logvar):
    if isinstance(recon_x, tuple):  # Gaussian: −log N(x; mean, exp(log_var))
        mean, log_var = recon_x
        reconstruction = 0.5 * torch.sum(log_var + (x - mean).pow(2) / log_var.exp() + math.log(2 * math.pi))
    else:
        reconstruction = F.binary_cross_entropy(recon_x, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return reconstruction + kld


def train_epoch(model, optimizer, loader) -> float:
    model.train()
    train_loss = 0.0
    for data, _ in loader:
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return train_loss


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = torch.from_numpy(load_data(args.data, data_dim=args.shape.data_dim))
    rows = data.repeat((args.train_samples + data.shape[0] - 1) // data.shape[0], 1)[: args.train_samples]
    loader = DataLoader(TensorDataset(rows, torch.zeros(rows.shape[0])), batch_size=args.batch_size, shuffle=True)
    warm_rows = rows[:1000]
    warmup = DataLoader(
        TensorDataset(warm_rows, torch.zeros(warm_rows.shape[0])), batch_size=args.batch_size, shuffle=True
    )
    model = VAE(args.shape, args.hidden_units)
    optimizer = OPTIMIZERS[args.shape.optimizer](model.parameters(), lr=args.shape.step_size)
    train_epoch(model, optimizer, warmup)

    def train() -> float:
        started = time.perf_counter()
        loss = train_epoch(model, optimizer, loader)
        rate = args.train_samples / (time.perf_counter() - started)
        log(f"plain: {rate:.0f} samples/s, loss {loss / args.train_samples:.2f}")
        return rate

    serve({"peer": "plain PyTorch loop", "version": torch.__version__}, {"train": train}, args)


if __name__ == "__main__":
    main()
