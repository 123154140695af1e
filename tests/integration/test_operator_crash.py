"""The operator SIGKILLed at random moments of its work, again and again (a bounded loop): each
time the restarted operator converges with no extra pod, no lost work, and every restart counted
once under the right cause.

The kill points are drawn at random in the windows where the operator writes (creating a gang,
restarting one after a failure); the seed is printed in every failure message.
"""

from __future__ import annotations

import random
import time

from harness.waits import wait_for
from test_operator_trainingjob import create, phase_is, status, trainingjob

KILLS = 5
WORKERS = 4


def gang(cluster, namespace, job) -> dict[str, object]:
    """Every pod of the job, Terminating ones included."""
    items = cluster.core.list_namespaced_pod(namespace, label_selector=f"torchyard.dev/job-name={job}").items
    return {p.metadata.name: p for p in items}


def settled(cluster, namespace, job, attempt: int):
    def probe():
        pods = gang(cluster, namespace, job)
        st = status(cluster, namespace, job)
        return (st.get("phase") == "Running" and st.get("attempt") == attempt
                and sorted(pods) == [f"{job}-worker-{i}" for i in range(WORKERS)]
                and all(p.metadata.deletion_timestamp is None and p.status.phase == "Running"
                        and p.metadata.labels["torchyard.dev/attempt"] == str(attempt) for p in pods.values())
                and st)
    return probe


def kill_and_restart(operator, rng: random.Random) -> None:
    time.sleep(rng.uniform(0.0, 0.6))
    operator.kill()
    operator.start()


def test_sigkill_at_random_points_loses_nothing_and_counts_each_restart_once(cluster, crds, namespace, operator,
                                                                             faults):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(KILLS):
        job = f"kill-{round_}"
        context = f"seed {seed}, round {round_}"
        create(cluster, namespace, trainingjob(job, worker={"replicas": WORKERS}, runPolicy={"backoffLimit": 5}))
        kill_and_restart(operator, rng)  # somewhere in creating the gang
        st = wait_for(settled(cluster, namespace, job, 0), f"{job} running once ({context})", timeout=60)
        assert (st["restarts"], st.get("infrastructureRestarts", 0)) == (0, 0), context

        faults.terminate_container(namespace, f"{job}-worker-{rng.randrange(WORKERS)}", exit_code=1)
        kill_and_restart(operator, rng)  # somewhere in restarting it
        st = wait_for(settled(cluster, namespace, job, 1), f"{job} restarted once ({context})", timeout=90)
        assert (st["restarts"], st.get("infrastructureRestarts", 0)) == (1, 0), f"{context}: {st}"
        assert st["lastFailure"]["exitCode"] == 1, context
    assert phase_is(cluster, namespace, f"kill-{KILLS - 1}", "Running")()


def test_sigkill_around_a_pod_scope_restart_counts_the_failure_once(cluster, crds, namespace, operator, faults):
    """restartScope Pod writes the restart (and the pod it counted) before deleting the failed pod;
    a kill anywhere around it neither loses the failure nor counts it twice."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    job = "pod-scope"
    create(cluster, namespace, trainingjob(job, worker={"replicas": WORKERS},
                                           runPolicy={"backoffLimit": 5, "restartScope": "Pod"}))
    wait_for(phase_is(cluster, namespace, job, "Running"), f"{job} Running (seed {seed})", timeout=60)
    for round_ in range(1, 4):
        victim = f"{job}-worker-{rng.randrange(WORKERS)}"
        uid = gang(cluster, namespace, job)[victim].metadata.uid
        faults.terminate_container(namespace, victim, exit_code=1)
        kill_and_restart(operator, rng)  # somewhere in recording the restart and deleting the pod

        def replaced():
            pods, st = gang(cluster, namespace, job), status(cluster, namespace, job)
            return (st.get("phase") == "Running" and sorted(pods) == [f"{job}-worker-{i}" for i in range(WORKERS)]
                    and pods[victim].metadata.uid != uid and not st.get("countedFailures")
                    and all(p.status.phase == "Running" and p.metadata.deletion_timestamp is None
                            for p in pods.values()) and st)
        st = wait_for(replaced, f"{victim} replaced (seed {seed}, round {round_})", timeout=60)
        assert (st["restarts"], st["attempt"]) == (round_, round_), f"seed {seed}, round {round_}: {st}"
