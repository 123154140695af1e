"""The `torchyard` command."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from dataclasses import dataclass

from torchyard.settings import Settings


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: list[str] | None  # None: every namespace
    http_host: str
    http_port: int
    peering: str | None
    priority: int
    workers: int
    settings: Settings
    kueue: bool = False  # queue labelled jobs through Kueue Workloads (docs/kueue.md)


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
    op.add_argument("--priority", type=int,
                    help="peering priority: the live replica with the highest acts (default: random, so that "
                         "replicas never tie; kopf pauses every replica of a tied priority)")
    op.add_argument("--workers", type=int, default=8, help="reconciles that may run at once")
    op.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    op.add_argument("--kueue", action="store_true",
                    help="admit jobs labelled kueue.x-k8s.io/queue-name through Kueue (needs Kueue's CRDs)")

    render = commands.add_parser("render", help="print the pods and Service a TrainingJob file becomes")
    render.add_argument("file")

    convert = commands.add_parser("convert", help="print the TrainingJobs of Kubeflow PyTorchJob manifests "
                                  "(kubeflow.org/v1); notes on what changed go to stderr")
    convert.add_argument("file", help="a YAML file of one or more documents, or - for stdin")

    run = commands.add_parser("run", help="run a TrainingJob file as local processes, no cluster needed")
    run.add_argument("file")
    run.add_argument("--output", help="directory for checkpoints, the model and results (default torchyard-runs/<job>)")
    run.add_argument("--timeout", type=float, help="give up after this many seconds")

    back = commands.add_parser("rollback", help="serve another version of a model (sets the ModelDeployment's spec.activeVersion)")
    back.add_argument("model", help="the ModelDeployment, or the model it serves")
    back.add_argument("--to", type=int, dest="version", help="the version to serve (default: status.previousVersion)")
    back.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    back.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait until that version serves")

    args = parser.parse_args(argv)
    if args.command == "operator":
        return run_operator(args)
    if args.command == "render":
        return render_file(args.file)
    if args.command == "run":
        return run_file(args.file, args.output, args.timeout)
    if args.command == "convert":
        return convert_file(args.file)
    if args.command == "rollback":
        return run_rollback(args)
    return 2


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    import torchyard.handlers.lifecycle  # noqa: F401  importing registers the handlers with kopf
    import torchyard.handlers.modeldeployment  # noqa: F401
    import torchyard.handlers.nodes  # noqa: F401
    import torchyard.handlers.trainingjob  # noqa: F401

    if args.kueue:
        import torchyard.handlers.kueue  # noqa: F401
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # kopf logs every handler's success at INFO; at scale that drowns what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    options = OperatorOptions(
        namespaces=args.namespaces,
        http_host=args.http_host,
        http_port=args.http_port,
        peering=args.peering,
        priority=peering_priority(args),
        workers=args.workers,
        settings=Settings.from_environ(),
        kueue=args.kueue,
    )
    kopf.run(
        clusterwide=not args.namespaces,
        namespaces=args.namespaces or [],
        standalone=not args.peering,
        peering_name=args.peering,
        priority=options.priority,
        memo=kopf.Memo(options=options),
    )
    return 0


def peering_priority(args: argparse.Namespace) -> int:
    """The given priority; with peering and none given, a random one in 1..2**30, so replicas do not tie."""
    if args.priority is not None:
        return args.priority
    return secrets.randbelow(1 << 30) + 1 if args.peering else 0


def run_rollback(args: argparse.Namespace) -> int:
    from torchyard.kube.client import Kube, current_namespace, load_config
    from torchyard.rollback import rollback

    load_config()
    return rollback(Kube(), args.namespace or current_namespace(), args.model, args.version, args.wait)


def load_job_file(path: str):
    """Parse a TrainingJob YAML file; print the field-naming error and return None if it is bad."""
    import yaml

    from torchyard.api.errors import SpecError
    from torchyard.api.trainingjob import KIND, parse_training_job

    with open(path) as f:
        obj = yaml.safe_load(f)
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        print(f"{path}: not a {KIND} (kind: {obj.get('kind') if isinstance(obj, dict) else None})", file=sys.stderr)
        return None
    obj.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000000")
    try:
        return parse_training_job(obj)
    except SpecError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return None


def run_file(path: str, output: str | None, timeout: float | None) -> int:
    from pathlib import Path

    from torchyard.local import run

    job = load_job_file(path)
    if job is None:
        return 2
    logging.basicConfig(level="WARNING")
    return run(job, Path(output or Path("torchyard-runs") / job.name).resolve(), timeout)


def render_file(path: str) -> int:
    import yaml

    from torchyard.api.errors import SpecError
    from torchyard.builders.pods import build_pods, build_service
    from torchyard.builders.security import check_overrides

    job = load_job_file(path)
    if job is None:
        return 2
    settings = Settings.from_environ()
    try:
        check_overrides(job, settings)
    except SpecError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    docs = [build_service(job)] + build_pods(job, attempt=0, settings=settings)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


def convert_file(path: str) -> int:
    """Print each PyTorchJob of the file as a TrainingJob; 1 if any could not be converted."""
    from torchyard.convert import convert_documents, render

    text = sys.stdin.read() if path == "-" else open(path).read()
    failed, printed = False, 0
    for index, name, outcome in convert_documents(text):
        where = f"{path}: document {index} ({name})"
        if outcome is None:
            print(f"warning: {where} is not a PyTorchJob; left out", file=sys.stderr)
            continue
        if isinstance(outcome, Exception):
            print(f"error: {where}: {outcome}", file=sys.stderr)
            failed = True
            continue
        for note in outcome.notes:
            print(f"warning: {where}: {note}", file=sys.stderr)
        sys.stdout.write(("---\n" if printed else "") + render(outcome))
        printed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
