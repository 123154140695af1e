"""The job's layout (torchyard_spec.topology) and the three paths that use it: the operator's pods,
`torchyard run`'s local processes and the trainer's local gang must give every process the same
rank, role and rendezvous."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import ALLREDUCE_GPU, PARAMETER_SERVER, job
from torchyard import local
from torchyard.builders.pods import build_pods
from torchyard.settings import Settings
from torchyard_spec import contract
from torchyard_spec.contract import PodEnv
from torchyard_spec.topology import Topology, loopback, parameter_server_processes
from torchyard_trainer.local import gang_environs


def layout(topology: Topology) -> list[tuple[str, int, int, int]]:
    return [(m.role, m.index, m.rank, m.node_rank) for m in topology.members()]


def test_parameter_servers_come_first_and_gpu_pods_take_consecutive_ranks():
    topology = Topology.of(2, 2, worker_processes=4)
    assert layout(topology) == [("ps", 0, 0, 0), ("ps", 1, 1, 1), ("worker", 0, 2, 2), ("worker", 1, 6, 3)]
    assert topology.world_size == 10 and topology.strategy == contract.STRATEGY_PARAMETER_SERVER
    assert (topology.master.role, topology.master.index) == ("ps", 0)


def test_an_allreduce_job_starts_at_worker_zero():
    topology = Topology.of(3)
    assert layout(topology) == [("worker", 0, 0, 0), ("worker", 1, 1, 1), ("worker", 2, 2, 2)]
    assert topology.strategy == contract.STRATEGY_ALLREDUCE and topology.master.role == "worker"


@pytest.mark.parametrize("topology", [Topology.of(3, 2), Topology.of(2, 1, worker_processes=4, parameter_server_processes=2)])
def test_every_pod_can_tell_how_many_processes_are_parameter_servers(topology):
    servers = sum(g.replicas * g.processes for g in topology.groups if g.role == contract.ROLE_PARAMETER_SERVER)
    for member in topology.members():
        env = topology.pod_env(member, loopback(1234), **COMMON)
        assert parameter_server_processes(PodEnv.from_environ(env.to_environ())) == servers


COMMON = dict(job_name="j", namespace="ns", checkpoint_dir="/c", model_dir="/m", model_name="j")


def test_the_env_round_trips_and_names_the_rendezvous_and_every_peer():
    topology = Topology.of(2, 1)
    network = loopback(5000, {("ps", 0): 6000, ("worker", 0): 6001, ("worker", 1): 6002})
    env = topology.pod_env(topology.member("worker", 1), network, **COMMON)
    assert PodEnv.from_environ(env.to_environ()) == env
    assert (env.master_addr, env.master_port, env.rank, env.node_rank) == ("127.0.0.1", 5000, 2, 2)
    assert env.worker_addresses == ("127.0.0.1:6001", "127.0.0.1:6002")
    assert env.parameter_server_addresses == ("127.0.0.1:6000",)


def ranks(environs) -> list[tuple[str, str, str, str]]:
    return [(e[contract.ROLE], e[contract.ROLE_INDEX], e[contract.RANK], e[contract.GROUP_RANK]) for e in environs]


def pod_environs(pods: list[dict]) -> list[dict[str, str]]:
    return [{e["name"]: e.get("value", "") for e in p["spec"]["containers"][0]["env"]} for p in pods]


@pytest.mark.parametrize("manifest", [PARAMETER_SERVER, ALLREDUCE_GPU], ids=["ps", "gpu"])
def test_torchyard_run_lays_out_processes_as_the_cluster_pods(manifest, tmp_path):
    parsed = job(manifest)
    cluster = pod_environs(build_pods(parsed, attempt=0, settings=Settings()))
    planned = [p.env for p in local.plan_processes(parsed, tmp_path, "http://127.0.0.1:1", b"k" * 32)]
    assert ranks(planned) == ranks(cluster)
    assert {e[contract.MASTER_ADDR] for e in planned} == {"127.0.0.1"}
    addresses = planned[0][contract.WORKER_ADDRESSES].split(",") + planned[0][contract.PARAMETER_SERVER_ADDRESSES].split(",")
    assert len(set(a for a in addresses if a)) == len(planned), "every local process listens on its own port"


def test_the_trainers_local_gang_lays_out_processes_as_the_cluster_pods(tmp_path):
    cluster = pod_environs(build_pods(job(PARAMETER_SERVER), attempt=0, settings=Settings()))
    workers = sum(e[contract.ROLE] == "worker" for e in cluster)
    names, environs = gang_environs(config={}, workers=workers, parameter_servers=len(cluster) - workers,
                                    checkpoint_dir=str(tmp_path), model_dir=str(tmp_path), result_dir=str(tmp_path))
    assert ranks(environs) == ranks(cluster)
    assert names[0] == "local-ps-0" and Path(environs[0][contract.RESULT_PATH]).name == "local-ps-0.json"
