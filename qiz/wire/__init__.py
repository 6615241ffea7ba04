"""The wire layer: canonical CBOR and the size limits every decoder enforces. Pure, no I/O."""

from qiz.wire.cbor import WireError, decode, encode

__all__ = ["WireError", "decode", "encode"]
