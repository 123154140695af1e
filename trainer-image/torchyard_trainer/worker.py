"""A worker process from start to result: build, resume, train, compress, evaluate, export.

Phases, in order: training for ``epochs`` (checkpointed); if pruning is configured, every worker
prunes the same synchronized weights and trains ``fineTuneEpochs`` more with the masks in place;
then the lead worker evaluates on the held-out split, saves the model artifact and returns the
result the operator reads. Other workers return None.
"""

from __future__ import annotations

import datetime
import logging

import torch.distributed as dist

from torchyard_spec.contract import STRATEGY_PARAMETER_SERVER
from torchyard_trainer import artifact, checkpoint, compress, distributed
from torchyard_trainer.allreduce import AllReduce
from torchyard_trainer.config import TrainerConfig
from torchyard_trainer.data import Dataset
from torchyard_trainer.evaluation import default_metric, evaluate, task_loss
from torchyard_trainer.metrics import TrainerMetrics
from torchyard_trainer.models import Standardized, build_model
from torchyard_trainer.progress import ProgressReporter
from torchyard_trainer.ps_client import ParameterServerClient
from torchyard_trainer.ps_protocol import plan_shards
from torchyard_trainer.trainer import Trainer

log = logging.getLogger(__name__)


def initial_model(config: TrainerConfig, data: Dataset) -> Standardized:
    """The model every process of a job starts from: same seed, same weights, same input scaling."""
    distributed.seed_everything(config.seed)
    model = build_model(config.model.architecture(), data.input_shape, data.num_outputs)
    model.set_input_stats(*data.input_stats())
    return model


def worker_group(process: distributed.Process) -> dist.ProcessGroup | None:
    """The group of worker processes (every process joins the call; ParameterServer only)."""
    if process.parameter_servers == 0:
        return None
    # The timeout must be given again: a new group does not inherit the default group's.
    return dist.new_group(list(process.worker_ranks),
                          timeout=datetime.timedelta(seconds=distributed.timeout_seconds()))


def build_strategy(process: distributed.Process, config: TrainerConfig, model, group):
    """AllReduce or the parameter-server client, as the pod's strategy says."""
    if process.env.strategy == STRATEGY_PARAMETER_SERVER:
        plan = plan_shards([p.numel() for p in model.parameters()], process.parameter_servers)
        return ParameterServerClient(process, plan, group, distributed.timeout_seconds())
    return AllReduce(process, config.optimizer)


def run_fingerprint(process: distributed.Process, config: TrainerConfig) -> str:
    return checkpoint.fingerprint(config, process.env.strategy, process.workers, process.parameter_servers)


def build_trainer(process, config, data, model, strategy, loss_fn, metrics, reporter) -> Trainer:
    """The training loop over ``config``'s epochs (fine-tuning included), checkpointing where the pod says."""
    return Trainer(
        process, model, data, strategy, loss_fn=loss_fn, batch_size=config.batch_size, seed=config.seed,
        total_epochs=config.epochs + config.fine_tune_epochs, metrics=metrics, reporter=reporter,
        checkpoint_dir=process.env.checkpoint_dir, fingerprint=run_fingerprint(process, config),
        checkpoint_every=config.checkpoint_every_steps,
    )


def run_worker(process: distributed.Process, config: TrainerConfig, data: Dataset, metrics: TrainerMetrics) -> dict | None:
    """Train as worker ``process.worker_index``; the lead returns the result, others None."""
    teacher = compress.Teacher(config.compression.distillation, data, process.device) if config.compression.distillation else None
    distributed.join(process)
    group = worker_group(process)
    model = initial_model(config, data).to(process.device)
    distributed.seed_everything(config.seed + 1 + process.worker_index)  # dropout differs per worker
    strategy = build_strategy(process, config, model, group)
    # Before any point-to-point traffic: parameter servers take part in this broadcast too.
    state = checkpoint.restore(process.env.checkpoint_dir, run_fingerprint(process, config),
                               process.is_lead, process.lead_rank)
    reporter = None
    if process.is_lead:
        env = process.env
        reporter = ProgressReporter(env.progress_url, env.progress_token, config.progress_interval_seconds).start()
    loss_fn = teacher.loss if teacher else task_loss(data.task)
    trainer = build_trainer(process, config, data, model, strategy, loss_fn, metrics, reporter)
    if state is not None:
        trainer.load(state)
    try:
        trainer.train(config.epochs)
        record = _prune_and_fine_tune(trainer, config)
        strategy.finish()
    finally:
        trainer.close()
        if reporter is not None:
            reporter.close()
    if not process.is_lead:
        return None
    return _finish(process, config, data, trainer, teacher, record)


def _prune_and_fine_tune(trainer: Trainer, config: TrainerConfig) -> dict | None:
    pruning = config.compression.pruning
    if pruning is None:
        return None
    trainer.strategy.synchronize()
    started = compress.prune(trainer.model, pruning)
    trainer.checkpointing = False  # a restart repeats pruning from the last training checkpoint
    trainer.train(config.epochs + pruning.fine_tune_epochs)
    return compress.pruning_record(trainer.model, pruning, started)


def _finish(process, config: TrainerConfig, data: Dataset, trainer: Trainer, teacher, pruning) -> dict:
    model = trainer.model
    metrics = {k: round(v, 6) for k, v in evaluate(model, data.x_test, data.y_test, data.task, process.device).items()}
    metric = config.metric or default_metric(data.task)
    compression_record = {}
    if pruning is not None:
        compression_record["pruning"] = pruning
    if teacher is not None:
        compression_record["distillation"] = teacher.report(model, metrics, data, process.device)
    env = process.env
    lineage = {"job": env.job_name, "namespace": env.namespace, "attempt": env.attempt,
               "teacher": config.compression.distillation.teacher_path if teacher else None,
               "compression": compression_record or None}
    arch_config = {"architecture": config.model.architecture(), "inputShape": list(data.input_shape),
                   "numOutputs": data.num_outputs, "task": data.task, "classes": data.classes}
    metadata = artifact.save_artifact(model, env.model_dir, config=arch_config, metrics=metrics, metric=metric,
                                      lineage=lineage, model_name=env.model_name)
    log.info("final %s: %s", metric, metrics.get(metric))
    return {
        "metrics": metrics,
        "metric": metric,
        "artifact": {"path": env.model_dir, "sha256": metadata["sha256"]},
        "steps": trainer.step,
        "compression": compression_record or None,
        "training": trainer.summary(),
    }
