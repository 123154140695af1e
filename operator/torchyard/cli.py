"""The `torchyard` command."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from torchyard.settings import Settings


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: list[str] | None  # None: every namespace
    http_host: str
    http_port: int
    peering: str | None
    workers: int
    settings: Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchyard", description="Train PyTorch models on Kubernetes and serve them.")
    commands = parser.add_subparsers(dest="command", required=True)

    op = commands.add_parser("operator", help="run the operator (watches TrainingJobs)")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", help="namespace to watch (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    op.add_argument("--http-host", default="0.0.0.0", help="address of the health/metrics/progress endpoint")
    op.add_argument("--http-port", type=int, default=8080, help="port of the health/metrics/progress endpoint")
    op.add_argument("--peering", help="kopf peering name: run several replicas, one active (needs the peering CRDs)")
    op.add_argument("--standalone", action="store_true", help="no peering (one replica); the default")
    op.add_argument("--workers", type=int, default=8, help="reconciles that may run at once")
    op.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    render = commands.add_parser("render", help="print the pods and Service a TrainingJob file becomes")
    render.add_argument("file")

    args = parser.parse_args(argv)
    if args.command == "operator":
        return run_operator(args)
    if args.command == "render":
        return render_file(args.file)
    return 2


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    import torchyard.handlers.lifecycle  # noqa: F401  registers the handlers
    import torchyard.handlers.trainingjob  # noqa: F401

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = OperatorOptions(
        namespaces=args.namespaces,
        http_host=args.http_host,
        http_port=args.http_port,
        peering=args.peering,
        workers=args.workers,
        settings=Settings.from_environ(),
    )
    kopf.run(
        clusterwide=not args.namespaces,
        namespaces=args.namespaces or [],
        standalone=not args.peering,
        peering_name=args.peering,
        memo=kopf.Memo(options=options),
    )
    return 0


def render_file(path: str) -> int:
    import yaml

    from torchyard.api.errors import SpecError
    from torchyard.api.trainingjob import parse_training_job
    from torchyard.builders.pods import build_pods, build_service

    with open(path) as f:
        obj = yaml.safe_load(f)
    obj.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000000")
    try:
        job = parse_training_job(obj)
    except SpecError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    docs = [build_service(job)] + build_pods(job, attempt=0, settings=Settings.from_environ())
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
