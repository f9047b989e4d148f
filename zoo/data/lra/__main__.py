"""``python -m zoo.data.lra describe <task> data_dir=<path> [key=value ...]``: split sizes, label balance, shapes.

``python -m zoo.data.lra generate listops|pathfinder|pathx data_dir=<path> [key=value ...]`` builds the offline data
(same keys as the DataModule, e.g. ``num_train=96000 processes=2`` or ``num_images=200000``).
Values are parsed as YAML scalars (``generate=true``, ``num_train=2000``).
"""
import json
import sys

import yaml

from . import TASKS, LRADataError


def parse_overrides(args):
    kwargs = {}
    for arg in args:
        key, sep, value = arg.partition('=')
        if not sep:
            raise SystemExit(f'expected key=value, got {arg!r}')
        kwargs[key] = yaml.safe_load(value)
    return kwargs


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ('describe', 'generate') or argv[1] not in TASKS:
        raise SystemExit(__doc__ + f'\ntasks: {", ".join(TASKS)}')
    command, task = argv[0], argv[1]
    try:
        run(command, task, parse_overrides(argv[2:]))
    except LRADataError as e:
        raise SystemExit(f'error: {e}') from None


def run(command: str, task: str, kwargs: dict) -> None:
    if 'data_dir' not in kwargs:
        raise SystemExit('data_dir=<path> is required')
    if command == 'generate':
        if task not in ('listops', 'pathfinder', 'pathx'):
            raise SystemExit(f'{task} cannot be generated offline; it reads released files')
        kwargs['generate'] = True
        datamodule = TASKS[task](**kwargs)
        datamodule.prepare_data()
        print(f'{task}: data ready under {datamodule.data_dir}')
        return
    print(json.dumps(TASKS[task](**kwargs).describe(), indent=1))


if __name__ == '__main__':
    main()
