"""Typed models of torchyard's custom resources, parsed and validated once, at the edge."""
