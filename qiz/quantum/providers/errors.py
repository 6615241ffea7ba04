"""The provider adapters' errors: one line each, as every ``QizError``."""

from __future__ import annotations

import importlib
from types import ModuleType

from qiz import QizError


class ProviderError(QizError):
    """A circuit cannot be sent to a provider as asked; says why."""


class ProviderMissing(ProviderError, ImportError):
    """The provider's SDK is not installed; names the extra that installs it."""


def require(module: str, adapter: str, extra: str) -> ModuleType:
    """``module`` imported, or a one-line ProviderMissing naming ``extra``."""
    sdk = module.split(".", maxsplit=1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ProviderMissing(
            f"qiz.quantum.providers.{adapter} needs {sdk} ({exc}); "
            f"install it: pip install 'qiz[{extra}]'"
        ) from None
