"""Importing this package registers every zoo architecture with timm."""
from . import inceptionnext  # noqa: F401
