"""A worker dies mid-run, the whole gang is restarted: training continues from the checkpoint.

The killed worker takes itself down (SIGKILL) in a chosen training step of attempt 0, so the
fault lands at the same place every run. The survivors must exit on their own with the retryable
code, and the restarted gang must end with exactly the weights of a run that never failed.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from torchyard_trainer import local
from torchyard_trainer.errors import EXIT_PEER_LOST
from trainer_gang import DIGITS_MLP, assert_succeeded, process_environment, run_gang

pytestmark = pytest.mark.trainer

CONFIG = {**DIGITS_MLP, "model": {"name": "module", "module": "faulty_model:build"}, "epochs": 3,
          "checkpointEverySteps": 10}
KILL_AT_STEP = 35
LAST_CHECKPOINT = 30  # checkpoints at steps 10, 20, 23 (end of epoch 1) and 30


def fault(rank: int) -> dict[str, str]:
    return {"FAULT_RANK": str(rank), "FAULT_AT_STEP": str(KILL_AT_STEP)}


@pytest.fixture(scope="module")
def unfaulted(tmp_path_factory):
    run = run_gang(tmp_path_factory.mktemp("unfaulted"), CONFIG)
    assert_succeeded(run)
    return run


def assert_gang_stopped_by_fault(run, killed: str) -> None:
    assert run.codes[killed] == -9, run.describe()
    for result in run.results:
        assert not result.timed_out, run.describe()
        if result.name != killed:
            assert result.returncode == EXIT_PEER_LOST, run.describe()
            assert "lost contact" in run.result(result.name)["error"]["message"]


def assert_resumed_like_unfaulted(run, unfaulted, atol: float) -> None:
    assert_succeeded(run)
    result = run.result()
    assert result["training"]["resumedFromStep"] == LAST_CHECKPOINT
    assert result["steps"] == unfaulted.result()["steps"]
    assert result["metrics"]["accuracy"] == pytest.approx(unfaulted.result()["metrics"]["accuracy"], abs=0.003)
    expected = unfaulted.weights()
    for name, value in run.weights().items():
        assert torch.allclose(value, expected[name], atol=atol, rtol=0), name


def test_ddp_gang_restart_resumes_from_the_checkpoint(tmp_path, unfaulted):
    first = run_gang(tmp_path, CONFIG, extra_env=fault(1), stop_on_failure=False)
    assert_gang_stopped_by_fault(first, "local-worker-1")
    assert not (tmp_path / "model").exists()

    second = run_gang(tmp_path, CONFIG, attempt=1, extra_env=fault(1))
    assert_resumed_like_unfaulted(second, unfaulted, atol=0)


def test_parameter_server_gang_restart_resumes_from_the_checkpoint(tmp_path, unfaulted):
    config = {**CONFIG, "parameterServer": {"mode": "Sync"}}
    first = run_gang(tmp_path, config, parameter_servers=1, extra_env=fault(2), stop_on_failure=False)
    assert_gang_stopped_by_fault(first, "local-worker-1")

    second = run_gang(tmp_path, config, parameter_servers=1, attempt=1, extra_env=fault(2))
    assert_resumed_like_unfaulted(second, unfaulted, atol=1e-5)


def test_parameter_server_gives_up_on_a_frozen_worker(tmp_path):
    """A worker that stops answering without closing its connections (SIGSTOP, as on a hung
    node) is declared lost after TORCHYARD_TIMEOUT_SECONDS; nothing waits forever."""
    config = {**DIGITS_MLP, "epochs": 50, "checkpointEverySteps": 5, "parameterServer": {"mode": "Sync"}}
    names, environs = local.gang_environs(
        config=config, workers=2, parameter_servers=1, checkpoint_dir=str(tmp_path / "c"),
        model_dir=str(tmp_path / "m"), result_dir=str(tmp_path / "r"))
    extra = process_environment({"TORCHYARD_TIMEOUT_SECONDS": "10"})
    gang = local.start([{**e, **extra} for e in environs], names=names)
    server, lead, frozen = gang.popens
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "c").glob("ckpt-*.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        frozen.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 90
        while (server.poll() is None or lead.poll() is None) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        frozen.kill()
        results = gang.wait(timeout=30, stop_on_failure=False)
    described = "\n".join(f"{r.name}: {r.returncode}\n" + "\n".join(r.output[-30:]) for r in results)
    assert server.returncode == EXIT_PEER_LOST and lead.returncode == EXIT_PEER_LOST, described
    assert "worker rank 2" in json.loads((tmp_path / "r" / "local-ps-0.json").read_text())["error"]["message"]
