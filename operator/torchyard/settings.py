"""Operator-wide settings: what every job gets unless its spec says otherwise.

Read once at start-up from command-line flags and environment variables (the Helm chart sets the
latter), then passed down as one frozen value; builders and decisions never read the environment.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field

DEFAULT_TRAINER_IMAGE = "torchyard/trainer:0.1.0"
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)


@dataclass(frozen=True)
class Settings:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    gpu_node_selector: dict = field(default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR))
    gpu_tolerations: tuple = DEFAULT_GPU_TOLERATIONS
    # Base URL of this operator as pods reach it, e.g. http://torchyard.torchyard-system.svc:8080.
    # Empty: pods get no progress URL and status.progress stays empty.
    progress_url_base: str = ""
    # Key that signs each job's progress token; keep it stable across restarts (the chart does).
    progress_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # The ModelDeployments' safety resync (TORCHYARD_RESYNC_SECONDS): their watch cache listed afresh
    # and every one queued. Grace periods are queued for when they end, so this only repairs a
    # missed event (it was a pass over every ModelDeployment every 5 s, reading the API server).
    resync_seconds: float = 300.0
    # The TrainingJobs' safety resync: the watch cache listed afresh and every job queued. Their
    # time-based rules are queued for when they fall due, so this only repairs a missed event.
    job_resync_seconds: float = 300.0
    # How long a pod may stay Terminating past its grace period before it is force-deleted
    # (a pod on a dead node never finishes terminating by itself).
    stuck_terminating_seconds: float = 60.0
    # How long a gang may sit on a node that is NotReady or lost before it is replaced elsewhere
    # (Kubernetes itself evicts only after 300 s, and never finishes deleting on a lost node).
    node_failure_seconds: float = 60.0
    # Whether a role's template.securityContext may relax the restricted defaults (root, a
    # writable root filesystem). Off unless the administrator turns it on.
    allow_security_context_overrides: bool = False

    @classmethod
    def from_environ(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        kwargs: dict = {}
        if env.get("TORCHYARD_TRAINER_IMAGE"):
            kwargs["trainer_image"] = env["TORCHYARD_TRAINER_IMAGE"]
        if env.get("TORCHYARD_IMAGE_PULL_POLICY"):
            kwargs["image_pull_policy"] = env["TORCHYARD_IMAGE_PULL_POLICY"]
        if env.get("TORCHYARD_GPU_NODE_SELECTOR"):
            kwargs["gpu_node_selector"] = json.loads(env["TORCHYARD_GPU_NODE_SELECTOR"])
        if env.get("TORCHYARD_GPU_TOLERATIONS"):
            kwargs["gpu_tolerations"] = tuple(json.loads(env["TORCHYARD_GPU_TOLERATIONS"]))
        if env.get("TORCHYARD_PROGRESS_URL_BASE"):
            kwargs["progress_url_base"] = env["TORCHYARD_PROGRESS_URL_BASE"].rstrip("/")
        if env.get("TORCHYARD_PROGRESS_KEY"):
            kwargs["progress_key"] = env["TORCHYARD_PROGRESS_KEY"].encode()
        if env.get("TORCHYARD_RESYNC_SECONDS"):
            kwargs["resync_seconds"] = float(env["TORCHYARD_RESYNC_SECONDS"])
        if env.get("TORCHYARD_JOB_RESYNC_SECONDS"):
            kwargs["job_resync_seconds"] = float(env["TORCHYARD_JOB_RESYNC_SECONDS"])
        if env.get("TORCHYARD_NODE_FAILURE_SECONDS"):
            kwargs["node_failure_seconds"] = float(env["TORCHYARD_NODE_FAILURE_SECONDS"])
        if env.get("TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES"):
            kwargs["allow_security_context_overrides"] = env["TORCHYARD_ALLOW_SECURITY_CONTEXT_OVERRIDES"].lower() == "true"
        return cls(**kwargs)
