"""Send errors: defined in ``services.domain.errors`` (the composition rules raise them)."""

from services.domain.errors import *  # noqa: F403
from services.domain.errors import __all__ as __all__
