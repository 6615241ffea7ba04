"""Every bound of the deploy engine's wiring into the node (the mesh source, the service's own
state, what its faces hand out). Each ``MAX_*`` has a row in docs/security.md.

A follower fetches a channel's whole store tree each refresh before TUF has looked at a byte of
it: the tree is bounded here, before anything is read into memory, so a publisher (or whoever
took over its name record, which TUF then refuses) cannot make a follower hold more.
"""

from __future__ import annotations

MIB = 1024 * 1024

MAX_CHANNEL_TREE_BYTES = 64 * MIB  # the store tree a channel's name record points at
MAX_CHANNEL_TREE_FILES = 4096  # files in that tree (roots, 2-3 snapshots/targets, descriptors)
MAX_CACHED_TREE_BYTES = 1 * MIB  # a followed tree kept between refreshes (larger: fetched again)
MAX_FOLLOWED_CHANNELS = 256  # channels one node follows
MAX_SERVICE_STATE_BYTES = 256 * 1024  # the service's own state file (follows, runs), read back
MAX_LOG_TAIL_BYTES = 64 * 1024  # the end of a bundle's log that `qiz deploy logs` is handed
MAX_JOB_SPEC_BYTES = 1024 * 1024  # a quantum container's job spec (as `qiz job submit` reads)
