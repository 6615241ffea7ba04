"""Node identities and the signed peer records that publish them."""

from qiz.identity.node_identity import NodeIdentity
from qiz.identity.peer_record import PeerRecord, PeerRecordError, RelayAddress

__all__ = ["NodeIdentity", "PeerRecord", "PeerRecordError", "RelayAddress"]
