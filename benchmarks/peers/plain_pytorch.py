"""A plain PyTorch training loop of the paper's MNIST VAE, written the way the PyTorch examples
write it (github.com/pytorch/examples, vae/main.py): a Dataset and a shuffling DataLoader, an
nn.Module with one nn.Linear per layer, a loss function with binary cross-entropy on sigmoid
outputs plus the closed-form KL, ``zero_grad``/``backward``/``step`` and ``loss.item()`` per
minibatch. Only the sizes (784-500-20, tanh, §5) and the optimiser (Adagrad, §5) are the paper's.

This is the baseline a user would write in an afternoon; the benchmark reports aevb's speed as a
multiple of it.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common import DATA_DIM, LATENT_DIM, LEARNING_RATE, load_data, log, parse_args, serve


class VAE(nn.Module):
    def __init__(self, hidden_units: int):
        super().__init__()
        self.fc1 = nn.Linear(DATA_DIM, hidden_units)
        self.fc21 = nn.Linear(hidden_units, LATENT_DIM)
        self.fc22 = nn.Linear(hidden_units, LATENT_DIM)
        self.fc3 = nn.Linear(LATENT_DIM, hidden_units)
        self.fc4 = nn.Linear(hidden_units, DATA_DIM)

    def encode(self, x):
        h1 = torch.tanh(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = torch.tanh(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, DATA_DIM))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, DATA_DIM), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


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
    data = torch.from_numpy(load_data(args.data))
    rows = data.repeat((args.train_samples + data.shape[0] - 1) // data.shape[0], 1)[: args.train_samples]
    loader = DataLoader(TensorDataset(rows, torch.zeros(rows.shape[0])), batch_size=args.batch_size, shuffle=True)
    warm_rows = rows[:1000]
    warmup = DataLoader(TensorDataset(warm_rows, torch.zeros(warm_rows.shape[0])), batch_size=args.batch_size,
                        shuffle=True)
    model = VAE(args.hidden_units)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=LEARNING_RATE)
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
