"""Label and annotation keys the operator puts on what it creates, and selectors over them."""

JOB_NAME = "torchyard.dev/job-name"
ROLE = "torchyard.dev/role"
INDEX = "torchyard.dev/index"
ATTEMPT = "torchyard.dev/attempt"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "torchyard"


def job_selector(job_name: str) -> str:
    return f"{JOB_NAME}={job_name}"
