"""Entropy coding: integer symbols and scale indexes <-> one byte string per layer.

Determinism is a design rule here. A decoder must rebuild exactly the
probability tables the encoder used, or the stream desynchronizes. Hence:

- symbols are residuals round(mu_q - mu_p), coded under a *zero-mean* model, so
  a last-bit drift of the prior mean between machines moves the reconstruction
  by a hair but never changes how a symbol is coded;
- each symbol's scale is an integer index into a fixed table of scales; the
  model computes it in exact arithmetic (``models.scales``), so encoder and
  decoder agree on it on any machine, and this package takes it as given;
- the probability tables are integers, computed once and stored with the model
  weights, never recomputed from floats at decode time.

This is the only package that imports constriction; it imports no model code.
"""

from .coder import AnsBackend
from .errors import CorruptStreamError
from .tables import PRECISION, GaussianTables, build_tables

__all__ = [
    "PRECISION",
    "AnsBackend",
    "CorruptStreamError",
    "GaussianTables",
    "build_tables",
]
