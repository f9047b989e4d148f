"""kernelzoo: large-kernel ConvNets and long-convolution sequence models as timm models."""
from . import models  # noqa: F401  (registers the architectures with timm)

__version__ = '0.1.0'
