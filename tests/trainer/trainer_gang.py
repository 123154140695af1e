"""Running real trainer gangs from the tests: processes on 127.0.0.1, gloo, one thread each."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from torchyard_trainer import local

HERE = Path(__file__).resolve().parent
_PORT_TAKEN = "Address already in use"
_PORT_RETRIES = 3
DIGITS_MLP = {
    "model": {"name": "mlp", "hiddenSizes": [64]},
    "dataset": {"name": "digits"},
    "optimizer": {"name": "sgd", "learningRate": 0.05, "momentum": 0.9, "weightDecay": 0.0001},
    "epochs": 2,
    "batchSize": 32,
    "seed": 7,
}


def steps_per_epoch(workers: int, batch_size: int, dataset: dict | None = None) -> int:
    """Batches each worker runs per epoch: its DistributedSampler share of the training split."""
    from torchyard_trainer.config import parse_config
    from torchyard_trainer.data import load_dataset

    config = parse_config({"dataset": dataset or {"name": "digits"}})
    train = len(load_dataset(config.dataset, config.seed).x_train)
    return math.ceil(math.ceil(train / workers) / batch_size)


def process_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every test process gets on top of its contract variables."""
    env = {
        "OMP_NUM_THREADS": "1",
        "TORCHYARD_TIMEOUT_SECONDS": "60",
        "TORCHYARD_METRICS_BIND_ADDRESS": "127.0.0.1",
        # Tests' own user modules (models, datasets) live beside the tests.
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    return {**env, **(extra or {})}


@dataclass
class GangRun:
    names: list[str]
    results: list[local.ProcessResult]
    root: Path

    @property
    def codes(self) -> dict[str, int | None]:
        return {r.name: r.returncode for r in self.results}

    def result(self, name: str | None = None) -> dict:
        """The result JSON of ``name`` (default: the lead worker)."""
        name = name or next(n for n in self.names if "-worker-0" in n)
        return json.loads((self.root / "results" / f"{name}.json").read_text())

    def weights(self) -> dict[str, torch.Tensor]:
        """The exported model's state dict."""
        return torch.load(self.root / "model" / "state_dict.pt", weights_only=True)

    def output(self, name: str) -> str:
        return "\n".join(next(r for r in self.results if r.name == name).output)

    def describe(self) -> str:
        return "\n".join(f"--- {r.name} exit {r.returncode}\n" + "\n".join(r.output[-25:]) for r in self.results)


def run_gang(root: Path, config: dict, *, workers: int = 2, parameter_servers: int = 0, attempt: int = 0,
             timeout: float = 240, extra_env: dict[str, str] | None = None, stop_on_failure: bool = True,
             command: tuple[str, ...] = local.TRAINER_COMMAND, checkpoint_dir: str | None = None,
             model_dir: str | None = None, **gang_kwargs) -> GangRun:
    """Run one attempt of a local job whose directories live under ``root`` (reused across attempts),
    or whose checkpoints and model go to ``checkpoint_dir`` and ``model_dir`` (an s3:// location).

    The rendezvous port is picked free but only bound seconds later, once torch has imported; if
    another program on the machine took it meanwhile, the attempt is repeated on a new port.
    """
    for _ in range(_PORT_RETRIES):
        names, environs = local.gang_environs(
            config=config, workers=workers, parameter_servers=parameter_servers,
            checkpoint_dir=checkpoint_dir or str(root / "checkpoints"), model_dir=model_dir or str(root / "model"),
            result_dir=str(root / "results"), attempt=attempt, **gang_kwargs,
        )
        environs = [{**e, **process_environment(extra_env)} for e in environs]
        results = local.launch(environs, names=names, timeout=timeout, stop_on_failure=stop_on_failure,
                               command=command)
        if not any(_PORT_TAKEN in line for r in results for line in r.output):
            break
    return GangRun(names, results, root)


def assert_succeeded(run: GangRun) -> None:
    assert all(code == 0 for code in run.codes.values()), run.describe()
