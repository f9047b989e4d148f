"""Run timm's own model tests on every image model the zoo registers.

    python tests/timm_suite.py /path/to/pytorch-image-models [pytest options]

The first argument is a checkout of huggingface/pytorch-image-models (ideally at the tag of the installed timm);
its `tests/test_models.py` runs against the installed timm with the zoo's models registered. Further arguments go
to pytest, e.g. `-m torchscript`, `-x`, `-k unireplknet_a`. Nothing is downloaded and nothing is written into the
timm checkout.

What this wrapper changes, and why:
- only zoo image models are collected (timm's own models and the zoo's sequence models are deselected, as are
  tests without a model);
- the tests that load pretrained weights are deselected: they need the network;
- timm picks the models for its `forward_intermediates` tests by module name (`FEAT_INTER_FILTERS`); the zoo's image
  model modules are added to that selection, so those tests cover the zoo too.
"""
import os
import sys

import pytest

NETWORK_TESTS = ('test_model_load_pretrained', 'test_model_features_pretrained', 'test_model_inference')
TIMM_MARKERS = ('base', 'cfg', 'torchscript', 'features', 'fxforward', 'fxbackward', 'timeout')


def _image_models() -> tuple[list[str], list[str]]:
    """Names of the zoo's image models and the modules that register them."""
    import timm.models
    import zoo.models

    names = zoo.models.image_model_names()
    modules = sorted({timm.models.model_entrypoint(n).__module__.rsplit('.', 1)[-1] for n in names})
    return names, modules


ZOO_IMAGE_MODELS, ZOO_IMAGE_MODULES = _image_models()


def _select_zoo_modules_too():
    """Make `list_models(module=[...])` also return the zoo's image models (timm's test module imports it later)."""
    import timm

    list_models = timm.list_models

    def list_models_with_zoo(*args, module='', **kwargs):
        names = list_models(*args, module=module, **kwargs)
        if isinstance(module, (list, tuple)) and module:
            names = sorted(set(names) | set(list_models(*args, module=ZOO_IMAGE_MODULES, **kwargs)))
        return names

    timm.list_models = list_models_with_zoo


def pytest_configure(config):
    for marker in TIMM_MARKERS:
        config.addinivalue_line('markers', f'{marker}: timm test marker')


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(item, 'callspec', None)
        model = params.params.get('model_name') if params else None
        is_zoo = model in ZOO_IMAGE_MODELS
        (keep if is_zoo and item.originalname not in NETWORK_TESTS else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith('-'):
        print(__doc__, file=sys.stderr)
        return 2
    test_file = os.path.join(argv[0], 'tests', 'test_models.py')
    if not os.path.isfile(test_file):
        print(f"error: no tests/test_models.py under {argv[0]!r}; give a checkout of "
              f"huggingface/pytorch-image-models", file=sys.stderr)
        return 2
    _select_zoo_modules_too()
    # importlib mode: the checkout's own `timm/` package never shadows the installed one.
    args = [test_file, '--import-mode=importlib', '-p', 'no:cacheprovider', '--rootdir', argv[0], *argv[1:]]
    return pytest.main(args, plugins=[sys.modules[__name__]])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
