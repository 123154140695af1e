"""7. One worker's container is killed mid-training: the gang restarts, resumes from the newest
checkpoint on the job's claim, and the job still succeeds. The test prints how long the restart
took, from the kill to all pods running again and to progress past the checkpoint (a trainer that
ignored SIGTERM would add the whole grace period of the pods the gang restart stops)."""
from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from e2e_kit import (Resources, assert_succeeded, example, explain_job, figure, job_pods, job_status, pod_log,
                     wait, wait_job, with_claim)

NAME = "e2e-restart"


@pytest.fixture
def resources(installed):
    res = Resources(installed)
    yield res
    res.cleanup()


def restart_job(claim: str) -> dict:
    """examples/digits-ddp.yaml, long enough to be caught mid-way, checkpointing often, retrying a kill."""
    job = with_claim(example("digits-ddp.yaml"), claim)
    job["metadata"]["name"] = NAME
    job["spec"]["runPolicy"].update(restartPolicy="ExitCode", restartScope="Gang", backoffLimit=3)
    job["spec"]["trainer"].update(epochs=100, checkpointEverySteps=20, progressIntervalSeconds=1)
    return job


def test_a_killed_worker_restarts_the_gang_from_its_checkpoint(installed, resources, kill_container):
    claim = resources.claim(f"{NAME}-data")
    resources.model(NAME)
    resources.create(restart_job(claim))
    explain = lambda: explain_job(installed, NAME)  # noqa: E731

    def mid_training():
        progress = job_status(installed, NAME).get("progress") or {}
        return progress.get("step", 0) >= 40 and progress.get("percent", 100) < 60 and progress

    before = wait(mid_training, f"{NAME} past step 40 and short of 60%", 600, interval=0.5, explain=explain)
    killed_at = kill_container(f"{NAME}-worker-1", "trainer")
    figure(f"restart: killed worker-1 at step {before['step']} of {before.get('totalSteps')}")

    def all_running_again():
        attempt = job_status(installed, NAME).get("attempt", 0)
        pods = [p for p in job_pods(installed, NAME) if p.metadata.deletion_timestamp is None]
        return attempt >= 1 and len(pods) == 2 and all(
            p.metadata.labels.get("torchyard.dev/attempt") == str(attempt) and p.status.phase == "Running" for p in pods)

    wait(all_running_again, "the restarted gang's pods Running", 300, interval=0.5, explain=explain)
    running_at = time.time()
    resumed = wait(lambda: re.search(r"resuming from step (\d+)", pod_log(installed, f"{NAME}-worker-0")),
                   "worker-0 to resume from a checkpoint", 300, interval=1,
                   explain=lambda: pod_log(installed, f"{NAME}-worker-0", tail=30))
    checkpoint_step = int(resumed[1])
    # Progress lags the kill by up to its interval, so the checkpoint may be a little past the step last reported.
    assert 0 < checkpoint_step < before["totalSteps"], f"resumed from step {checkpoint_step}, killed near {before['step']}"

    def past_checkpoint():
        progress = job_status(installed, NAME).get("progress") or {}
        updated = progress.get("updateTime")
        fresh = updated and datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp() >= int(running_at) + 1
        return fresh and progress.get("step", 0) > checkpoint_step and progress

    wait(past_checkpoint, f"progress past step {checkpoint_step} after the restart", 300, interval=0.5, explain=explain)
    progressed_at = time.time()
    figure(f"restart: all pods Running again {running_at - killed_at:.1f}s after the kill; progress past the "
          f"checkpoint (step {checkpoint_step}) {progressed_at - killed_at:.1f}s after it")

    status = wait_job(installed, NAME)
    assert_succeeded(installed, NAME, status)
    assert status.get("attempt", 0) >= 1, f"no restart recorded: {status}"
    failure = status.get("lastFailure") or {}
    print(f"restart: lastFailure {failure}")
    assert f"{NAME}-worker" in str(failure.get("pod", "")), f"lastFailure does not name a worker: {failure}"
