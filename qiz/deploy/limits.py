"""Every bound of the deploy formats, in one place (docs/security.md has a row for each MAX_*).

A channel's metadata and a bundle's manifest come from a publisher a follower has chosen to
trust with its software, but the bytes travel through the storage pool and anyone can serve
them: every length is checked before anything is parsed, so a hostile source can never make a
follower read or hold more than these.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# --- qiz-bundle.toml -------------------------------------------------------------------------
MAX_MANIFEST_BYTES = 64 * KIB  # the qiz-bundle.toml file
MAX_NAME_BYTES = 64  # a bundle (= channel) name
MAX_VERSION_BYTES = 64  # a version string
MAX_COMMAND_ARGS = 64  # argv entries of command / health.command
MAX_ARG_BYTES = 4 * KIB  # one argv entry
MAX_ENV_VARS = 128  # entries of [env]
MAX_ENV_BYTES = 4 * KIB  # one env value
MAX_JOB_PATH_BYTES = 1024  # the job = "path" of a quantum container
MAX_MEMORY_MB = 1024 * 1024  # limits.memory_mb (1 TiB)
MAX_CPU_SECONDS = 7 * 24 * 3600  # limits.cpu_seconds
MAX_OPEN_FILES = 1 << 20  # limits.open_files
MAX_SECONDS = 24 * 3600.0  # any interval, timeout, backoff or window in the manifest
# a health check forks the node to run its command: at most ten a second per bundle
MIN_HEALTH_INTERVAL = 0.1
MAX_RETRIES = 100  # health.retries
MAX_RESTART_STARTS = 1000  # restart.max_starts

# --- the TUF target of a version (the descriptor) --------------------------------------------
MAX_DESCRIPTOR_BYTES = 4 * MIB  # a descriptor (or the pointer to a sealed one)
MAX_BUNDLE_FILES = 8192  # files listed in one descriptor (the storage pool's tree bound)
MAX_FILE_PATH_BYTES = 1024  # one file's relative path in a descriptor

# --- channel metadata (python-tuf's UpdaterConfig and our publisher) ---------------------------
# A composite signature is 6746 hex characters, an SLH-DSA one 15712: python-tuf's default
# 16 KiB timestamp bound would hold two signatures at most, so ours are wider.
MAX_ROOT_BYTES = 512 * KIB
MAX_TIMESTAMP_BYTES = 64 * KIB
MAX_SNAPSHOT_BYTES = 1 * MIB
MAX_TARGETS_BYTES = 4 * MIB
MAX_ROOT_ROTATIONS = 64  # new root versions a follower walks through in one refresh
MAX_KEYS_PER_ROLE = 16  # n of a k-of-n role
MAX_SIGNATURE_HEX = 2 * 7856  # the longest signature a key of ours accepts (SLH-DSA-128s)
MAX_CHANNEL_VERSIONS = 1000  # versions a channel's targets metadata lists
