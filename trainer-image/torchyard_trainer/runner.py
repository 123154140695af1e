"""One trainer process: parse, load, dispatch on role, and turn the outcome into an exit code.

Exit codes (see :mod:`torchyard_trainer.errors`): 0 success; 2 a user error, with the field named
in the result JSON; 170 a lost peer, which a gang restart can cure; 143 stopped by SIGTERM (see
:mod:`torchyard_trainer.shutdown`); 1 anything else. Every failing
process writes ``{"error": {"field", "message"}}`` to its result path so the operator can show why.
"""

from __future__ import annotations

import logging

from torchyard_spec.contract import PodEnv
from torchyard_trainer import checkpoint, compress, distributed, shutdown
from torchyard_trainer.config import TrainerConfig, parse_config
from torchyard_trainer.data import Dataset, load_dataset
from torchyard_trainer.errors import (EXIT_FAILED, EXIT_OK, EXIT_PEER_LOST, EXIT_PREEMPTED, EXIT_USER_ERROR,
                                      Preempted, UserError, is_communication_error)
from torchyard_trainer.metrics import TrainerMetrics
from torchyard_trainer.ps_host import ShardHost
from torchyard_trainer.ps_protocol import plan_shards
from torchyard_trainer.result import error_payload, write_result
from torchyard_trainer.worker import initial_model, run_fingerprint, run_worker, worker_group

log = logging.getLogger(__name__)


def run_parameter_server(process: distributed.Process, config: TrainerConfig, data: Dataset,
                         metrics: TrainerMetrics) -> None:
    """Serve shard ``process.rank`` until every worker is done (or one is lost)."""
    if config.compression.distillation is not None:
        compress.check_teacher(config.compression.distillation, data)
    distributed.join(process)
    worker_group(process)  # collective: the workers create their group with every process
    model = initial_model(config, data)
    plan = plan_shards([p.numel() for p in model.parameters()], process.parameter_servers)
    workers = list(process.worker_ranks)
    host = ShardHost(process.rank, plan, model, config.optimizer, config.parameter_server, workers,
                     metrics, distributed.timeout_seconds())
    state = checkpoint.restore(process.env.checkpoint_dir, run_fingerprint(process, config), False, process.lead_rank)
    if state is not None:
        host.load(state)
    host.run()
    if host.stopped:
        raise Preempted("stopped with the workers, who were asked to stop and wrote a checkpoint")


def _run(env: PodEnv, local_rank: int) -> None:
    config = parse_config(env.trainer_config)
    process = distributed.Process.from_env(env, local_rank)
    data = load_dataset(config.dataset, config.seed, config.metric)
    metrics = TrainerMetrics.for_process(env, process.rank)
    metrics.serve(env.metrics_port + local_rank if env.metrics_port > 0 else 0)
    if process.is_parameter_server:
        run_parameter_server(process, config, data, metrics)
        return
    result = run_worker(process, config, data, metrics)
    if result is not None:
        write_result(env.result_path, result)


def run_process(env: PodEnv, local_rank: int = 0) -> int:
    """Run this process's part of the job and return its exit code."""
    shutdown.install(lambda message: write_result(env.result_path, error_payload(None, message)))
    try:
        _run(env, local_rank)
    except Exception as exc:
        code, field, message = _outcome(exc)
        write_result(env.result_path, error_payload(field, message))
        return code
    distributed.leave()
    return EXIT_OK


def _outcome(exc: Exception) -> tuple[int, str | None, str]:
    """A failure's exit code, and the field and message its result names (logged here)."""
    if isinstance(exc, Preempted):
        log.warning("%s", exc)
        return EXIT_PREEMPTED, None, str(exc)
    if isinstance(exc, UserError):
        log.error("configuration error: %s", exc)
        return EXIT_USER_ERROR, exc.field, exc.message
    first_line = (str(exc).splitlines() or [""])[0]
    if shutdown.requested():  # stopping: a peer that left first is no fault of the job's
        message = f"stopped by SIGTERM: {type(exc).__name__}: {first_line[:300]}"
        log.warning("%s", message)
        return EXIT_PREEMPTED, None, message
    if is_communication_error(exc):
        message = f"lost contact with another process of the job: {first_line[:500]}"
        log.error("%s", message)
        return EXIT_PEER_LOST, None, message
    log.exception("training failed")
    return EXIT_FAILED, None, f"{type(exc).__name__}: {exc}"
