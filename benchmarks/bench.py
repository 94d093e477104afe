"""aevb's speed against its peers, measured in one run: ``python benchmarks/bench.py``.

Times, on the paper's MNIST model (784-500-20, tanh, Bernoulli decoder, M = 100, L = 1, §5) and,
for training, on its Frey Face model (560-200-20, Gaussian decoder with a sigmoid mean: dense
data; when the Frey Face file is found), and with ``--models burda`` on Burda et al.'s model of
``aevb reproduce nll`` (784-200-200-50, Adam, minibatches of 20):

* training throughput (samples/s) of aevb (its default fused step, and plain autograd), of a plain
  PyTorch loop written like the PyTorch examples, of pythae when a Python with pythae is given
  (``--pythae-python``; pythae lives in its own virtual environment, never in aevb's), and the
  GEMM-only bound (the step's matrix products alone);
* importance-sampled log-likelihood throughput (decoder evaluations/s, k = ``--nll-samples``) of
  aevb, pythae and the GEMM-only bound;
* the peak resident memory of every peer's process, and of a process that only imports torch;
* with ``--busy``, all of it on a busy machine: one core kept busy by a plain Python loop for the
  whole run, and aevb with one thread as a further peer (what its default, adaptive thread
  count gains or loses there).

Every peer runs in its own process and is kept alive between repeats; the harness asks each for
one repeat in turn, round after round (the order rotating), so the peers share whatever the
machine's speed does meanwhile. It prints medians over the rounds with their range and the
ratios aevb / peer, and with ``--json`` writes everything (schema ``aevb-bench/1``, stable;
each peer says its ``model``) for comparisons over time. The data are the embedded MNIST sample
(10,000 images), binarised once, and Frey Face's training split (1,565 images, grey levels /256).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine_info import cpu_flags, cpu_name  # (beside this script: benchmarks/machine_info.py)

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
SCHEMA = "aevb-bench/1"
sys.path.insert(0, str(PEERS))
from common import MODELS as BENCH_MODELS  # noqa: E402  (the peers' models: shapes, optimiser, M)

# Issue targets on a 2-core machine (issue 32): (model, measure, peer, minimum ratio aevb / peer);
# model None: every model that has the measure and the peer.
TARGETS = [
    ("mnist", "train", "plain PyTorch loop", 2.8),
    ("frey", "train", "plain PyTorch loop", 2.3),
    ("mnist", "train", "pythae", 1.6),
    (None, "train", "GEMM-only bound", 0.85),
    ("mnist", "nll", "pythae", 3.0),
    (None, "nll", "GEMM-only bound", 0.95),
]


MODEL_TITLES = {
    "mnist": "784-500-20 tanh, Bernoulli decoder, L = 1",
    "frey": "Frey Face 560-200-20 tanh, Gaussian decoder (sigmoid mean), L = 1",
    "burda": "Burda et al.'s 784-200-200-50 tanh, Bernoulli decoder, L = 1, Adam",
}


@dataclass
class Peer:
    key: str
    command: list[str]
    measures: tuple[str, ...]
    model: str = "mnist"
    name: str = ""
    process: subprocess.Popen | None = None
    values: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, list[dict]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    peak_rss_mb: float | None = None
    suffix: str = ""  # told apart from a peer of the same name (aevb with one thread)

    def start(self, log) -> None:
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1, cwd=PEERS
        )
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"{self.key} did not start: {self.info}")
        self.name = self.info["peer"] + self.suffix

    def measure(self, what: str) -> float:
        self.process.stdin.write(what + "\n")
        reply = self._read()
        if "value" not in reply:
            raise RuntimeError(f"{self.key}: {reply}")
        self.values.setdefault(what, []).append(reply["value"])
        details = {key: value for key, value in reply.items() if key not in ("measure", "value")}
        if details:  # per repeat, beside its value (aevb: steps_by_threads)
            self.details.setdefault(what, []).append(details)
        return reply["value"]

    def stop(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        peak = self._read().get("peak_rss_mb")
        self.peak_rss_mb = peak if self.peak_rss_mb is None or peak is None else max(self.peak_rss_mb, peak)
        self.process.wait(timeout=60)
        self.process = None

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"peer {self.key} exited (rc {self.process.wait()}); see the log")
        return json.loads(line)


def embedded_sample(path: Path) -> Path:
    """The embedded MNIST sample's training images, binarised with a fixed seed, as float32 .npy."""
    from aevb.data import load_dataset

    images = load_dataset("mnist-sample").train.numpy()
    binary = (np.random.default_rng(0).random(images.shape) < images).astype(np.float32)
    np.save(path, binary)
    return path


def frey_training_data(path: Path) -> tuple[Path | None, str]:
    """Frey Face's training images as float32 .npy, from the data directory aevb finds
    (``$AEVB_DATA_DIR``...); None and the reason when it is not there."""
    from aevb.data import load_dataset
    from aevb.errors import AevbError

    try:
        images = load_dataset("frey").train.numpy().astype(np.float32)
    except AevbError as error:
        return None, str(error)
    np.save(path, images)
    return path, ""


def torch_baseline_rss(python: str) -> float:
    code = "import resource, torch; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    return float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def machine() -> dict:
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def write_json(path: Path, record: dict) -> None:
    """A benchmark's record as indented JSON at ``path`` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def model_peers(model: str, data: Path, args: argparse.Namespace) -> list[Peer]:
    """The peers timing ``model`` (keys prefixed by the model but for MNIST's, the first benchmark's)."""
    common = [
        "--data",
        str(data),
        "--model",
        model,
        "--train-samples",
        str(args.train_samples),
        "--nll-points",
        str(args.nll_points),
        "--nll-samples",
        str(args.nll_samples),
    ]
    threads = ["--threads", str(args.threads)]
    me, prefix = sys.executable, "" if model == "mnist" else f"{model}-"
    both = ("train",) if model == "frey" else ("train", "nll")
    peers = [Peer(prefix + "aevb", [me, "aevb_peer.py", *common, *threads], both, model)]
    if not args.no_autograd:
        peers.append(
            Peer(
                prefix + "aevb-autograd",
                [me, "aevb_peer.py", *common, *threads, "--engine", "autograd"],
                ("train",),
                model,
            )
        )
    if args.busy and args.threads > 1:  # what aevb's default gains or loses against one thread there
        peers.append(
            Peer(
                prefix + "aevb-1-thread",
                [me, "aevb_peer.py", *common, "--threads", "1"],
                ("train",),
                model,
                suffix=" 1 thread",
            )
        )
    peers.append(Peer(prefix + "plain", [me, "plain_pytorch.py", *common, *threads], ("train",), model))
    if args.pythae_python and model == "mnist":
        peers.append(Peer("pythae", [args.pythae_python, "pythae_peer.py", *common, *threads], both, model))
    peers.append(Peer(prefix + "gemm", [me, "gemm_bound.py", *common, *threads], both, model))
    return peers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="aevb against its peers: training and likelihood throughput.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in every peer")
    parser.add_argument("--rounds", type=int, default=5, help="repeats of every measurement (medians reported)")
    parser.add_argument("--train-samples", type=int, default=20000, help="samples per training repeat")
    parser.add_argument("--nll-points", type=int, default=100, help="datapoints per likelihood repeat")
    parser.add_argument("--nll-samples", type=int, default=1000, help="importance samples per datapoint, k")
    parser.add_argument(
        "--pythae-python",
        default=os.environ.get("AEVB_BENCH_PYTHAE_PYTHON"),
        help="a Python with pythae installed (default: $AEVB_BENCH_PYTHAE_PYTHON; skipped if unset)",
    )
    parser.add_argument("--no-autograd", action="store_true", help="leave out aevb's autograd engine")
    parser.add_argument(
        "--models",
        default="mnist,frey",
        help="models to time, comma-separated: mnist, frey (Frey Face, training only; left out "
        "with a note when its file is not found), burda (Burda et al.'s model of "
        "`aevb reproduce nll`, minibatches of 20) (default: mnist,frey)",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="measure a busy machine: one core kept busy by a plain Python loop for the whole run "
        "(started and stopped here), and aevb with one thread as a further peer",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--keep-processes",
        action="store_true",
        help="start every peer once for all rounds (default: fresh processes every round, so that "
        "the luck of one process's memory placement, which on a shared VM moved one aevb "
        "process 35%% against another, averages out over the rounds for every peer)",
    )
    args = parser.parse_args(argv)
    if min(args.threads, args.rounds, args.train_samples, args.nll_points, args.nll_samples) < 1:
        parser.error("every count must be at least 1")
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not models or any(name not in MODEL_TITLES for name in models):
        parser.error(f"--models takes a comma-separated list of {', '.join(MODEL_TITLES)}, got {args.models!r}")

    with tempfile.TemporaryDirectory(prefix="aevb-bench-") as scratch:
        data = {}
        if {"mnist", "burda"} & set(models):
            data["mnist"] = data["burda"] = embedded_sample(Path(scratch) / "mnist-sample-binary.npy")
        if "frey" in models:
            frey, why = frey_training_data(Path(scratch) / "frey-train.npy")
            if frey is None:
                print(f"bench: Frey Face left out: {why}", file=sys.stderr)
                models.remove("frey")
            else:
                data["frey"] = frey
        if not models:
            print("bench: no model to time", file=sys.stderr)
            return 1
        peers = []
        for model in models:
            peers += model_peers(model, data[model], args)
        log_path, me = Path(scratch) / "peers.log", sys.executable
        # The busy machine of --busy: an ordinary process spinning on one core, as a browser or a
        # second job would, for the whole measurement.
        spinner = subprocess.Popen([me, "-c", "while True: pass"]) if args.busy else None
        with open(log_path, "w") as log:
            try:
                for peer in peers:
                    print(f"starting {peer.key} ...", file=sys.stderr, flush=True)
                    peer.start(log)
                for round_index in range(args.rounds):
                    if round_index > 0 and not args.keep_processes:
                        for peer in peers:  # every peer started anew, then all measured in turn
                            peer.stop()
                            peer.start(log)
                    order = peers[round_index % len(peers) :] + peers[: round_index % len(peers)]
                    for peer in order:
                        for what in peer.measures:
                            value = peer.measure(what)
                            print(
                                f"round {round_index + 1}/{args.rounds} {peer.model:<5} {peer.name:<28} {what:<5} "
                                f"{value:>10,.0f}",
                                file=sys.stderr,
                                flush=True,
                            )
                for peer in peers:
                    peer.stop()
            except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired) as error:
                log.flush()
                print(f"bench: {error}\n--- peer log ---\n{log_path.read_text()[-4000:]}", file=sys.stderr)
                for peer in peers:
                    if peer.process is not None and peer.process.poll() is None:
                        peer.process.kill()
                return 1
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()

    report = {
        "schema": SCHEMA,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "threads": args.threads,
            "rounds": args.rounds,
            "train_samples": args.train_samples,
            "busy": args.busy,
            "fresh_processes_every_round": not args.keep_processes,
            "batch_size": 100,
            "batch_sizes": {name: BENCH_MODELS[name].batch_size for name in models},
            "model": MODEL_TITLES["mnist"],
            "models": {name: MODEL_TITLES[name] for name in models},
            "nll_points": args.nll_points,
            "nll_samples": args.nll_samples,
        },
        "torch_import_rss_mb": torch_baseline_rss(me),
        "peers": [
            {
                "key": p.key,
                "name": p.name,
                "model": p.model,
                "peak_rss_mb": p.peak_rss_mb,
                **{
                    what: summarise(values) | ({"details": p.details[what]} if what in p.details else {})
                    for what, values in p.values.items()
                },
            }
            for p in peers
        ],
    }
    report["ratios"] = ratios(report["peers"])
    print_report(report)
    if args.json is not None:
        write_json(args.json, report)
    return 0


def ratios(peers: list[dict]) -> list[dict]:
    """aevb / peer, per model and measure: the ratio of the medians, and the median of the ratios
    of the same round (measured minutes apart at most, so less exposed to the machine's drift)."""
    out = []
    for model in dict.fromkeys(p.get("model", "mnist") for p in peers):
        same = [p for p in peers if p.get("model", "mnist") == model]
        aevb = next((p for p in same if p["key"].endswith("aevb")), None)
        if aevb is None:
            continue
        for what in ("train", "nll"):
            for peer in same:
                if peer is aevb or what not in peer or what not in aevb:
                    continue
                ratio = aevb[what]["median"] / peer[what]["median"]
                paired = statistics.median(a / b for a, b in zip(aevb[what]["values"], peer[what]["values"]))
                target = next(
                    (
                        minimum
                        for for_model, measure, name, minimum in TARGETS
                        if for_model in (None, model) and measure == what and peer["name"].startswith(name)
                    ),
                    None,
                )
                out.append(
                    {
                        "model": model,
                        "measure": what,
                        "peer": peer["name"],
                        "ratio": ratio,
                        "paired_ratio": paired,
                        "target": target,
                    }
                )
    return out


def print_report(report: dict) -> None:
    m, s = report["machine"], report["settings"]
    print(f"# {SCHEMA}  {report['date']}")
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {s['threads']} threads, "
        f"{s['rounds']} rounds{', fresh processes each' if s.get('fresh_processes_every_round') else ''}"
        f"{', one core kept busy' if s.get('busy') else ''} "
        "(median [min-max])"
    )
    models = s.get("models", {"mnist": s["model"]})
    for model, title in models.items():
        batch_size = s.get("batch_sizes", {}).get(model, s["batch_size"])
        units = {
            "train": f"training, samples/s ({title}, M = {batch_size})",
            "nll": f"importance-sampled log p(x), decoder evaluations/s ({title}, k = {s['nll_samples']}, "
            f"{s['nll_points']} points)",
        }
        for what, heading in units.items():
            rows = [p for p in report["peers"] if what in p and p.get("model", "mnist") == model]
            if rows:
                print(f"\n{heading}")
            for peer in rows:
                v = peer[what]
                print(f"  {peer['name']:<30} {v['median']:>10,.0f}  [{v['min']:,.0f}-{v['max']:,.0f}]")
    print("\nratios aevb / peer: of the medians, and median of same-round ratios (target)")
    for r in report["ratios"]:
        target = (
            ""
            if r["target"] is None
            else f"  (target >= {r['target']:g}: {'met' if min(r['ratio'], r['paired_ratio']) >= r['target'] else 'MISSED'})"
        )
        print(
            f"  {r.get('model', 'mnist'):<6} {r['measure']:<5} / {r['peer']:<44} {r['ratio']:6.2f}x "
            f"{r['paired_ratio']:6.2f}x{target}"
        )
    print(f"\npeak memory, MB (resident; a process that only imports torch: {report['torch_import_rss_mb']:.0f})")
    for peer in report["peers"]:
        print(f"  {peer.get('model', 'mnist'):<6} {peer['name']:<30} {peer['peak_rss_mb']:>8.0f}")


if __name__ == "__main__":
    sys.exit(main())
