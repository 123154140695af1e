"""``python -m torchyard_trainer``: the command of every bundled-trainer container.

Reads the pod's environment (docs/contract.md). A pod with ``LOCAL_WORLD_SIZE`` > 1 (its role's
nprocPerNode, by default one process per GPU) starts that many copies of itself, the k-th with rank
``RANK + k`` and GPU k (on a CPU pod, all on the CPU), and exits with the first failing child's
code; otherwise this process trains (or serves a shard) itself.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from torchyard_spec.contract import ContractError, PodEnv, RESULT_PATH, DEFAULT_RESULT_PATH
from torchyard_trainer.errors import EXIT_OK, EXIT_USER_ERROR

# Set by the per-GPU spawner for its children; a process that has it never spawns again.
CHILD_ENV = "TORCHYARD_LOCAL_RANK"
log = logging.getLogger("torchyard_trainer")


def _configure_logging(label: str) -> None:
    logging.basicConfig(
        level=os.environ.get("TORCHYARD_LOG_LEVEL", "INFO"),
        stream=sys.stdout,
        format=f"%(asctime)s {label} %(levelname)s %(name)s: %(message)s",
    )


def _spawn_local(env: PodEnv) -> int:
    """One child per local process; the first non-zero exit code wins."""
    from torchyard_trainer import local

    environs = [{CHILD_ENV: str(k), "LOCAL_RANK": str(k)} for k in range(env.local_world_size)]
    names = [f"rank{env.rank + k}" for k in range(env.local_world_size)]
    gang = local.start(environs, names=names, on_line=lambda name, line: print(line, flush=True))
    # The kubelet stops a pod by signalling this process only; pass it on to the children.
    signal.signal(signal.SIGTERM, lambda signum, frame: [gang.kill(k, signal.SIGTERM) for k in range(len(names))])
    results = gang.wait()
    failures = [r.returncode for r in results if r.returncode not in (0, None)]
    if not failures:
        return EXIT_OK
    # A child killed by signal N reports -N; a shell would say 128 + N, and so does the pod.
    return failures[0] if failures[0] > 0 else 128 - failures[0]


def main() -> int:
    try:
        env = PodEnv.from_environ()
    except ContractError as exc:
        _configure_logging("[trainer]")
        log.error("%s", exc)
        from torchyard_trainer.result import error_payload, write_result

        write_result(os.environ.get(RESULT_PATH) or DEFAULT_RESULT_PATH, error_payload("env", str(exc)))
        return EXIT_USER_ERROR
    local_rank = int(os.environ.get(CHILD_ENV, "0"))
    _configure_logging(f"[{env.role} rank {env.rank + local_rank}]")
    if env.local_world_size > 1 and CHILD_ENV not in os.environ:
        return _spawn_local(env)
    from torchyard_trainer.runner import run_process

    return run_process(env, local_rank)


if __name__ == "__main__":
    code = main()
    # Leave at once with the code the operator expects, the result already written. After a
    # failure, threads may still be blocked in a receive from a peer, which a normal interpreter
    # exit would wait on. After a success too: the process group is destroyed, but a normal exit
    # finalizes Python while torch's gloo threads may still hold work that refers to Python
    # objects, and that can abort a finished rank (SIGABRT, "terminate called without an active
    # exception": exit -6 after a run that succeeded). Every thread the trainer starts is a daemon,
    # and the last checkpoint has been waited for before this point.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
