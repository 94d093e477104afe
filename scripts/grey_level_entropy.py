"""The best Bernoulli log-likelihood a grey-level MNIST test set allows, at k/256 and at k/255.

A Bernoulli decoder scores a grey level x ∈ [0, 1] by x log p + (1 − x) log(1 − p), which is
largest at p = x, where it is minus the Bernoulli entropy H(x). So no model's bound or log p(x) on
grey-level images exceeds −Σ_d H(x_d) per image: the scaling of the grey levels moves every
grey-level bound by the difference of these ceilings.

    python scripts/grey_level_entropy.py --data-dir ../shared/data

Writes benchmarks/results/grey_level_entropy.json (nats per image, the 10,000 t10k images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from aevb.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent


def ceiling(x: torch.Tensor) -> float:
    """Mean over images of −Σ_d H(x_d), nats per image, in float64 (0 log 0 = 0)."""
    x = x.double()
    return (torch.special.xlogy(x, x) + torch.special.xlogy(1 - x, 1 - x)).sum(1).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    ceilings = {
        f"k/{int(divisor)}": ceiling(load_dataset("mnist", args.data_dir, pixel_divisor=divisor).test)
        for divisor in (256.0, 255.0)
    }
    out = ROOT / "benchmarks" / "results" / "grey_level_entropy.json"
    document = {
        "command": "python scripts/grey_level_entropy.py --data-dir DATA_DIR",
        "what": "mean over the 10,000 MNIST test images of -sum_d H(x_d), the highest Bernoulli log-likelihood "
        "(nats per image) any model can give them",
        "ceilings": ceilings,
        "k/255 minus k/256": ceilings["k/255"] - ceilings["k/256"],
    }
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
