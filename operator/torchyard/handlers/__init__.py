"""kopf decorators only: each handler parses its arguments and calls the layer below."""
