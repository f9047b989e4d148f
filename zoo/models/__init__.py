"""Importing this package registers every zoo architecture with timm."""
from ._registry import image_model_names, sequence_model_names, zoo_model_names  # noqa: F401
from ._state_dict import unwrap_state_dict  # noqa: F401
from . import inceptionnext  # noqa: F401
from . import unireplknet  # noqa: F401
from . import liegroup  # noqa: F401
from . import seqnet  # noqa: F401  (S4D and SGConv sequence classifiers)
