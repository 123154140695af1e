"""A local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok) run as
plain processes on 127.0.0.1, for the integration tests. See docs/development.md."""
