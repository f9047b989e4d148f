"""Which timm names the zoo itself registers, split into image and sequence models."""
import timm
from timm.models import model_entrypoint

__all__ = ['zoo_model_names', 'image_model_names', 'sequence_model_names']

_SEQUENCE_MODULES = ('zoo.models.seqnet',)


def zoo_model_names() -> list[str]:
    return sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith('zoo.'))


def sequence_model_names() -> list[str]:
    return [n for n in zoo_model_names() if model_entrypoint(n).__module__ in _SEQUENCE_MODULES]


def image_model_names() -> list[str]:
    return [n for n in zoo_model_names() if model_entrypoint(n).__module__ not in _SEQUENCE_MODULES]
