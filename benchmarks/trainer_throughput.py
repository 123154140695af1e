"""Trainer throughput against a minimal hand-written DDP loop, measured in one run.

Three ways to train the same model on the same data with the same batch size and epochs:

  ddp-baseline   a plain DistributedDataParallel loop written here (no checkpoints, no metrics)
  torchyard-ddp  the bundled trainer, AllReduce strategy, exactly as a pod runs it
  torchyard-ps   the bundled trainer, ParameterServer strategy (Sync), with --servers shards

Each variant runs --rounds times, interleaved, and the median samples/s is reported; the
trainer's figure covers its whole training loop, per-epoch evaluation and checkpoints included.
Prints figures and ratios; it never passes or fails. Example:

    python benchmarks/trainer_throughput.py --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torchyard_trainer import local


def _config(args: argparse.Namespace) -> dict:
    return {
        "model": {"name": "mlp", "hiddenSizes": args.hidden},
        "dataset": {"name": "synthetic-classification", "samples": args.samples, "features": args.features,
                    "classes": 10},
        "optimizer": {"name": "sgd", "learningRate": 0.05, "momentum": 0.9},
        "epochs": args.epochs,
        "batchSize": args.batch_size,
        "seed": 1,
        "progressIntervalSeconds": 5,
    }


def _env() -> dict[str, str]:
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TORCHYARD_METRICS_BIND_ADDRESS": "127.0.0.1"}


def run_trainer(args: argparse.Namespace, servers: int) -> float:
    """Samples/s the bundled trainer reports for one whole job."""
    with tempfile.TemporaryDirectory() as root:
        names, environs = local.gang_environs(
            config=_config(args), workers=args.workers, parameter_servers=servers,
            checkpoint_dir=f"{root}/c", model_dir=f"{root}/m", result_dir=f"{root}/r")
        results = local.launch([{**e, **_env()} for e in environs], names=names, timeout=1800)
        if any(r.returncode != 0 for r in results):
            raise SystemExit("\n".join(line for r in results for line in r.output[-20:]))
        lead = next(n for n in names if "-worker-0" in n)
        return json.loads(Path(root, "r", f"{lead}.json").read_text())["training"]["samplesPerSecond"]


def run_baseline(args: argparse.Namespace) -> float:
    """Samples/s of the hand-written loop (this file, re-run once per rank)."""
    port = local.free_port()
    environs = [{**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
                 "WORLD_SIZE": str(args.workers)} for r in range(args.workers)]
    command = [sys.executable, __file__, "--baseline-rank", *sys.argv[1:]]
    results = local.launch(environs, command=command, timeout=1800)
    if any(r.returncode != 0 for r in results):
        raise SystemExit("\n".join(line for r in results for line in r.output[-20:]))
    return json.loads(results[0].output[-1])["samplesPerSecond"]


def baseline_rank(args: argparse.Namespace) -> None:
    """The plain loop: DDP, DistributedSampler, in-memory batches, SGD; prints samples/s on rank 0."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    from torchyard_trainer.config import parse_config
    from torchyard_trainer.data import load_dataset
    from torchyard_trainer.models import build_model

    config = parse_config(_config(args))
    data = load_dataset(config.dataset, config.seed)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(config.seed)
    model = DistributedDataParallel(build_model(config.model.architecture(), data.input_shape, data.num_outputs))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = DistributedSampler(range(len(data.x_train)), num_replicas=world, rank=rank, seed=config.seed)
    samples, started = 0, time.perf_counter()
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(sampler))
        for i in range(0, len(order), config.batch_size):
            index = order[i:i + config.batch_size]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += len(index)
    seconds = time.perf_counter() - started
    if rank == 0:
        print(json.dumps({"samplesPerSecond": samples * world / seconds}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rank", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_rank:
        baseline_rank(args)
        return
    figures: dict[str, list[float]] = {"ddp-baseline": [], "torchyard-ddp": [], "torchyard-ps": []}
    for round_ in range(args.rounds):
        figures["ddp-baseline"].append(run_baseline(args))
        figures["torchyard-ddp"].append(run_trainer(args, servers=0))
        figures["torchyard-ps"].append(run_trainer(args, servers=args.servers))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in figures.items()), flush=True)
    median = {k: statistics.median(v) for k, v in figures.items()}
    print(f"\nworkers {args.workers}, MLP {args.hidden}, batch {args.batch_size}, {args.samples} samples x "
          f"{args.features} features, {args.epochs} epochs, median of {args.rounds} rounds")
    for name, value in median.items():
        print(f"  {name:14s} {value:10.0f} samples/s")
    print(f"  torchyard-ddp / ddp-baseline = {median['torchyard-ddp'] / median['ddp-baseline']:.3f}")
    print(f"  torchyard-ps ({args.servers} server) / ddp-baseline = {median['torchyard-ps'] / median['ddp-baseline']:.3f}")


if __name__ == "__main__":
    main()
