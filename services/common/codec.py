"""Decoding records into models: the rule lives in ``services.domain.codec``."""

from services.domain.codec import *  # noqa: F403
from services.domain.codec import __all__ as __all__
