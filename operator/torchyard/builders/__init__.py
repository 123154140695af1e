"""Pure functions from a parsed job to the manifests the operator creates. No I/O here."""
