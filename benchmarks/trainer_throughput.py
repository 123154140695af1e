"""Trainer throughput against a minimal hand-written DDP loop, measured in one run.

Two comparisons, each in one gang of processes on this machine:

  torchyard-ddp vs ddp-baseline   the bundled trainer's AllReduce path against a plain loop
  torchyard-ps  vs ddp-baseline   the ParameterServer path (Sync, --servers shards) against it

The plain loop is what the PyTorch DDP tutorial writes: DistributedDataParallel, a
DistributedSampler, in-memory batches, SGD; after each epoch rank 0 evaluates on the held-out split
and saves a snapshot. The bundled trainer's epoch is its real one (the Trainer class and strategy a
pod runs): steps with metrics and progress, sharded evaluation, a checkpoint. Every worker runs
one epoch of each in turn, --epochs times, so both meet the same load on a busy machine; the
figures are total samples over total seconds of each. Prints figures and ratios; it never passes or
fails. Example:

    python benchmarks/trainer_throughput.py --workers 2 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
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


def compare(args: argparse.Namespace, servers: int) -> dict:
    """Run one gang; returns worker 0's figures."""
    with tempfile.TemporaryDirectory() as root:
        names, environs = local.gang_environs(
            config=_config(args), workers=args.workers, parameter_servers=servers,
            checkpoint_dir=f"{root}/c", model_dir=f"{root}/m", result_dir=f"{root}/r")
        extra = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TORCHYARD_METRICS_BIND_ADDRESS": "127.0.0.1"}
        command = [sys.executable, __file__, "--rank-process", *sys.argv[1:]]
        results = local.launch([{**e, **extra} for e in environs], names=names, command=command, timeout=3600)
        if any(r.returncode != 0 for r in results):
            raise SystemExit("\n".join(line for r in results for line in r.output[-20:]))
        return json.loads(results[servers].output[-1])


def rank_process(args: argparse.Namespace) -> None:
    """One process of the gang: a parameter server, or a worker alternating the two loops."""
    import torch

    from torchyard_spec.contract import PodEnv
    from torchyard_trainer import checkpoint, distributed, runner, worker
    from torchyard_trainer.config import parse_config
    from torchyard_trainer.data import load_dataset
    from torchyard_trainer.evaluation import task_loss
    from torchyard_trainer.metrics import TrainerMetrics

    torch.set_num_threads(1)
    process = distributed.Process.from_env(PodEnv.from_environ())
    config = parse_config(_config(args))
    data = load_dataset(config.dataset, config.seed)
    metrics = TrainerMetrics("bench", process.role, process.rank)
    if process.is_parameter_server:
        runner.run_parameter_server(process, config, data, metrics)
        return
    distributed.join(process)
    group = worker.worker_group(process)
    model = worker.initial_model(config, data)
    strategy = worker.build_strategy(process, config, model, group)
    checkpoint.restore(process.env.checkpoint_dir, worker.run_fingerprint(process, config), False, process.lead_rank)
    trainer = worker.build_trainer(process, config, data, model, strategy, task_loss(data.task), metrics, None)
    baseline = PlainLoop(process, config, data, group)
    seconds = {"ddp-baseline": 0.0, "torchyard": 0.0}
    for epoch in range(config.epochs):
        started = time.perf_counter()
        baseline.epoch(epoch)
        seconds["ddp-baseline"] += time.perf_counter() - started
        started = time.perf_counter()
        trainer.train(epoch + 1)
        seconds["torchyard"] += time.perf_counter() - started
    strategy.finish()
    trainer.close()
    samples = baseline.samples * process.workers
    if process.is_lead:
        print(json.dumps({name: samples / s for name, s in seconds.items()}), flush=True)


class PlainLoop:
    """The hand-written DDP loop, one epoch per call."""

    def __init__(self, process, config, data, group):
        import torch
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DistributedSampler

        from torchyard_trainer.models import build_model

        torch.manual_seed(config.seed)
        self.rank = process.worker_index
        self.data = data
        self.batch_size = config.batch_size
        net = build_model(config.model.architecture(), data.input_shape, data.num_outputs)
        self.model = DistributedDataParallel(net, process_group=group)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.sampler = DistributedSampler(range(len(data.x_train)), num_replicas=process.workers,
                                          rank=process.worker_index, seed=config.seed)
        self.snapshot = Path(tempfile.mkdtemp()) / "snapshot.pt"
        self.samples = 0

    def epoch(self, epoch: int) -> None:
        import torch
        import torch.nn.functional as F

        self.sampler.set_epoch(epoch)
        order = torch.as_tensor(list(self.sampler))
        for i in range(0, len(order), self.batch_size):
            index = order[i:i + self.batch_size]
            loss = F.cross_entropy(self.model(self.data.x_train[index]), self.data.y_train[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.samples += len(index)
        if self.rank == 0:
            self.model.eval()
            with torch.no_grad():
                accuracy = (self.model.module(self.data.x_test).argmax(dim=1) == self.data.y_test).float().mean()
            self.model.train()
            torch.save({"model": self.model.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "epoch": epoch, "accuracy": float(accuracy)}, self.snapshot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rank-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_process:
        rank_process(args)
        return
    print(f"workers {args.workers}, MLP {args.hidden}, batch {args.batch_size} per worker, {args.samples} samples x "
          f"{args.features} features, {args.epochs} epochs of each loop, interleaved")
    for name, servers in (("torchyard-ddp", 0), (f"torchyard-ps ({args.servers} server)", args.servers)):
        figures = compare(args, servers)
        print(f"  {name:24s} {figures['torchyard']:9.0f} samples/s   ddp-baseline {figures['ddp-baseline']:9.0f} "
              f"samples/s   ratio {figures['torchyard'] / figures['ddp-baseline']:.3f}", flush=True)


if __name__ == "__main__":
    main()
