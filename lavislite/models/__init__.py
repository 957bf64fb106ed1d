"""Models. Importing this package registers every built-in model (the registry does it lazily)."""

from lavislite.models import (
    blip,  # noqa: F401  (registers the BLIP heads)
    blip2,  # noqa: F401  (registers the BLIP-2 heads)
)
from lavislite.models.base_model import BaseModel

__all__ = ["BaseModel"]
