"""Topic names: the contract lives in ``schemas.topics``; re-exported for the services."""

from schemas.topics import *  # noqa: F403
from schemas.topics import __all__ as __all__
