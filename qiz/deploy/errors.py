"""Errors of the deploy engine: one sentence each, and a refusal names the attack it stopped.

A follower that refuses a channel's metadata says *which* TUF attack the refusal defeats
(arbitrary software, rollback, freeze, mix-and-match, endless data...), so the person reading
``qiz deploy status`` knows whether the source is stale, broken or hostile.
"""

from __future__ import annotations

from qiz import CheckFailed, NotFound, QizError


class DeployError(QizError):
    """Base class of every deploy error."""


class BundleError(DeployError):
    """A bundle directory or its ``qiz-bundle.toml`` is not acceptable (the publisher's mistake)."""


class ChannelError(DeployError):
    """The publisher cannot do what was asked: a threshold its signers cannot meet, a version
    published twice, a malformed channel directory."""


class ChannelUnavailable(DeployError, NotFound):
    """A file the channel needs could not be fetched from its source."""


class AttackRefused(DeployError, CheckFailed):
    """Metadata or a target failed verification; the message names the attack refused."""


class ArbitrarySoftware(AttackRefused):
    """Metadata not signed by the keys its delegator trusts (bad signature or wrong key)."""


class ThresholdNotMet(AttackRefused):
    """Some, but fewer than threshold, trusted keys signed a role's metadata."""


class RollbackRefused(AttackRefused):
    """Metadata older than what the follower already trusts."""


class FreezeRefused(AttackRefused):
    """Expired metadata: a source replaying a stale but validly signed state."""


class MixAndMatchRefused(AttackRefused):
    """Metadata that does not match what its signed parent says (version, length or hash)."""


class EndlessDataRefused(AttackRefused):
    """A file longer than its declared (or bounded) length."""


class TamperedTarget(AttackRefused):
    """A target whose bytes do not hash to what the signed targets metadata pins."""


class MalformedMetadata(AttackRefused):
    """Metadata that does not parse, or breaks a rule of the format."""


class SealedToOthers(AttackRefused):
    """A sealed bundle this node is not a recipient of."""

    http_status = 403
