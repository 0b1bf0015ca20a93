"""The partition rule: lives in ``services.domain.partition``; re-exported here."""

from services.domain.partition import *  # noqa: F403
from services.domain.partition import __all__ as __all__
