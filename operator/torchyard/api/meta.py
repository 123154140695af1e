"""Object metadata shared by every torchyard resource."""

from __future__ import annotations


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict:
    """The controller owner reference children carry, so deleting the owner deletes them."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
