"""Every bound of the storage format (docs/store.md) in one module, so that a parser, a holder
and the document agree on them; docs/security.md has a row for each ``MAX_*``.

Why these values:

* a manifest must fit comfortably in one QMP message and stays small enough to parse before any
  other work: 128 KiB holds a tree of thousands of entries and 16 recipients;
* a share must fit one QMP message (1 MiB of payload since session 16, 256 KiB before) with
  its framing even at k=1, hence chunks of at most 128 KiB and pieces of at most 1008 KiB (the
  rest of a message is the RPC's framing, under 200 bytes): 23 shares of a 128 KiB chunk at
  k=3, 15 at k=2, in one piece. Each piece is one RPC round trip, whose fixed CPU does not
  depend on its size, so pieces are as large as a message allows (with 240 KiB pieces a
  256 MiB put ran at 379 MB/s and a get at 460, with these at 424 and 539: docs/store.md);
* the chunk count bounds the chunk table (32 bytes a chunk: 32 MiB at most), which a holder
  keeps beside its column and a getter checks against the root;
* integers are at most 2**63-1 because every one of them may end up in a holder's SQLite index.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

FORMAT_VERSION = 1

# -- chunks and content
CHUNK_SIZE = 128 * KIB  # the default C (measured in docs/store.md)
MIN_CHUNK = 16 * KIB
MAX_CHUNK = 128 * KIB
MAX_CHUNKS = 1 << 20  # chunk table of at most 32 MiB
MAX_CONTENT = 64 * GIB  # stream bytes of one content
HASH_SIZE = 32  # SHA-256 of a stored chunk; the Merkle root
TAG_SIZE = 16  # AES-256-GCM tag added to every sealed chunk

# -- erasure coding
DEFAULT_K = 3
DEFAULT_N = 5
MAX_SHARES = 16  # n: distinct holders of one content (zfec allows up to 256)

# -- the manifest
MAX_MANIFEST = 128 * KIB
MAX_RECIPIENTS = 16
MAX_TREE_ENTRIES = 8192
MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_UINT = 2**63 - 1  # what SQLite's INTEGER holds

# -- holders
MAX_PIECE = 1008 * KIB  # bytes of one store.put / store.read: one QMP message, framing aside
MAX_LEASE = 31 * 24 * 3600  # seconds a lease may be asked for at once
OFFER_TTL = 600  # seconds an accepted offer reserves its bytes without a put

# -- one holder's bookkeeping (qiz.store.holdings): what one peer can make it track
MAX_OFFERS = 1024  # offers pending on one holder, from all peers together
MAX_OFFERS_PER_PEER = 64  # offers one peer may have pending on one holder
MAX_UPLOAD_RANGES = 1024  # separate byte ranges one offer's pieces may leave (memory)
MAX_OFFSET = 1 << 40  # a put's or read's offset: beyond any column or table allowed above
MAX_READ_CACHE = 4096  # (content, column) pairs whose file a holder's reads remember
MAX_PENDING_ANNOUNCES = 256  # provider announcements in flight after commits; more are dropped
MAX_PENDING_FLUSHES = 4  # a holder's background flushes of arriving columns; more are skipped
STORE_DISK_HEADROOM = 256 * MIB  # free disk a holder never lends, whatever max_bytes says
# index writes (offer, commit, renew, release: each one SQLite transaction and fsync) one peer
# may ask of one holder: a sustained rate per second and a burst. An owner's renewal pass
# over many leases fits the burst; a peer replaying requests gets this rate at most.
STORE_WRITE_RATE = 50.0
STORE_WRITE_BURST = 1000

# -- getters (what one get spends on holders that lie)
MAX_HOLDERS_PER_INDEX = 8  # holders of one column a get remembers from providers and owners
MAX_ROUNDS = 3  # holders deep a chunk that does not check out is read again, column by column
MAX_DECODE_TRIES = 64  # k-subsets tried for one such chunk per round (C(16, 8) is 12,870)
