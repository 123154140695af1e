"""Helpers for the integration tier: the cluster handle, waiting, fault injection, the operator
process. The pytest fixtures that use them are in tests/integration/conftest.py."""
