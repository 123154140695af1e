"""SIGTERM at a random step: the gang finishes the step in flight, checkpoints, exits 143, and the
restarted gang ends with exactly the weights of a run that was never interrupted.

The signal comes from a user model (``sigterm_model``) in a chosen training step, the way a kubelet
stops a container in the middle of whatever it is doing. The step is drawn at random per run and
printed in every failure message, so a failing draw can be repeated.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest
import torch

from torchyard_trainer import local
from torchyard_trainer.errors import EXIT_PREEMPTED
from trainer_gang import DIGITS_MLP, GangRun, assert_succeeded, process_environment, run_gang, steps_per_epoch

pytestmark = pytest.mark.trainer

EPOCHS = 2
CONFIG = {**DIGITS_MLP, "model": {"name": "module", "module": "sigterm_model:build"}, "epochs": EPOCHS}
STOPPED_AFTER = re.compile(r"stopped by SIGTERM after step (\d+)")


def draw_step(workers: int) -> int:
    """A step inside the run, away from its first and last steps."""
    return random.randint(2, steps_per_epoch(workers, CONFIG["batchSize"]) * EPOCHS - 3)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = {}

    def run(workers: int, parameter_servers: int = 0):
        key = (workers, parameter_servers)
        if key not in runs:
            config = {**CONFIG, "parameterServer": {"mode": "Sync"}} if parameter_servers else CONFIG
            runs[key] = run_gang(tmp_path_factory.mktemp("uninterrupted"), config, workers=workers,
                                 parameter_servers=parameter_servers)
            assert_succeeded(runs[key])
        return runs[key]

    return run


def signal_env(rank: int, step: int, pid_file=None) -> dict[str, str]:
    env = {"SIGNAL_RANK": str(rank), "SIGNAL_AT_STEP": str(step)}
    return {**env, "SIGNAL_PID_FILE": str(pid_file)} if pid_file else env


def stopped_step(run, drawn: int) -> int:
    """The step every process stopped after, checked to be the same everywhere, and the newest checkpoint."""
    context = f"SIGTERM in step {drawn}\n{run.describe()}"
    assert all(code == EXIT_PREEMPTED for code in run.codes.values()), context
    worker_steps = {int(STOPPED_AFTER.search(run.result(n)["error"]["message"]).group(1))
                    for n in run.names if "-worker-" in n}
    assert len(worker_steps) == 1, context
    (step,) = worker_steps
    # At most the step in flight is repeated: the gang stops within a step or two of the signal
    # (the vote that agrees on the stop runs one step behind), and the stop step is saved.
    assert drawn <= step <= drawn + 2, context
    newest = sorted(run.root.joinpath("checkpoints").glob("ckpt-*.pt"))[-1]
    assert int(newest.stem.split("-")[1]) == step, context
    assert not run.root.joinpath("model").exists(), context
    return step


def assert_resumed_like_uninterrupted(run, uninterrupted, resumed_from: int, atol: float, drawn: int) -> None:
    context = f"SIGTERM in step {drawn}\n{run.describe()}"
    assert_succeeded(run)
    result = run.result()
    assert result["training"]["resumedFromStep"] == resumed_from, context
    assert result["steps"] == uninterrupted.result()["steps"], context
    expected = uninterrupted.weights()
    for name, value in run.weights().items():
        assert torch.allclose(value, expected[name], atol=atol, rtol=0), f"{name}: {context}"


def test_ddp_gang_stops_on_sigterm_and_resumes_without_losing_a_step(tmp_path, uninterrupted):
    drawn = draw_step(2)
    first = run_gang(tmp_path, CONFIG, extra_env=signal_env(1, drawn), stop_on_failure=False)
    step = stopped_step(first, drawn)

    second = run_gang(tmp_path, CONFIG, attempt=1)
    assert_resumed_like_uninterrupted(second, uninterrupted(2), step, atol=0, drawn=drawn)


def test_parameter_server_on_sigterm_stops_the_workers_at_a_checkpoint(tmp_path, uninterrupted):
    """The server is the one signalled: it keeps serving until the workers, told in its replies,
    have checkpointed (its optimizer state included) and stopped."""
    config = {**CONFIG, "parameterServer": {"mode": "Sync"}}
    drawn = draw_step(2)
    pid_file = tmp_path / "server.pid"
    first = _run_with_pid_file(tmp_path, config, signal_env(1, drawn, pid_file), pid_file)
    step = stopped_step(first, drawn)

    second = run_gang(tmp_path, config, parameter_servers=1, attempt=1)
    assert_resumed_like_uninterrupted(second, uninterrupted(2, 1), step, atol=1e-5, drawn=drawn)


def _run_with_pid_file(tmp_path, config, env, pid_file):
    """One attempt whose first process (the parameter server) writes its pid where the model reads it."""
    names, environs = local.gang_environs(
        config=config, workers=2, parameter_servers=1, checkpoint_dir=str(tmp_path / "checkpoints"),
        model_dir=str(tmp_path / "model"), result_dir=str(tmp_path / "results"))
    gang = local.start([{**e, **process_environment(env)} for e in environs], names=names)
    pid_file.write_text(str(gang.popens[0].pid))
    return GangRun(names, gang.wait(timeout=240, stop_on_failure=False), tmp_path)


def test_a_single_process_trainer_as_pid_1_stops_on_sigterm(tmp_path):
    """PID 1 in a container ignores signals it has no handler for; the trainer installs one.
    The process runs as PID 1 of a new PID namespace and signals itself, as from inside."""
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("cannot start a process as PID 1 here (unshare --pid needs privileges)")
    drawn = draw_step(1)
    command = ("unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "torchyard_trainer")
    run = run_gang(tmp_path, CONFIG, workers=1, extra_env=signal_env(0, drawn), command=command,
                   stop_on_failure=False)
    assert "handling SIGTERM as pid 1" in run.output("local-worker-0"), run.describe()
    assert stopped_step(run, drawn) == drawn  # alone, it stops right after the step in flight
