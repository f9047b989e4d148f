"""Importing this package registers every zoo architecture with timm."""
from . import inceptionnext  # noqa: F401
from . import unireplknet  # noqa: F401
from . import liegroup  # noqa: F401
