"""The storage pool's user-facing errors: one line each, with the CLI exit code and HTTP status
their class implies (see :class:`qiz.QizError`)."""

from __future__ import annotations

from qiz import QizError


class StoreError(QizError):
    """A store operation could not be done as asked."""


class StoreDisabled(StoreError):
    """This node runs without the storage pool (``[store] enabled = false``)."""

    http_status = 503


class ContentNotFound(StoreError):
    """No holder (nor this node) has the content."""

    http_status = 404

    def __init__(self, cid: str, asked: int) -> None:
        super().__init__(f"content {cid} not found after {asked} holders asked")


class NotEnoughHolders(StoreError):
    """Fewer distinct holders accepted than the put needs."""

    http_status = 503


class NotOwned(StoreError):
    """The content is not in this node's catalog (it neither published nor pinned it)."""

    http_status = 404
