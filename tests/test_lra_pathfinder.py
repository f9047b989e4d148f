"""Pathfinder / Path-X: LRA parameters, visible markers, balanced seeded generation, released layout, bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.lra import LRADataError, PathfinderDataModule, PathXDataModule
from zoo.data.lra.pathfinder import DIFFICULTY, LRA_PARAMS, generate_pathfinder, render_pathfinder


def test_lra_parameters_use_integer_division():
    assert LRA_PARAMS[32].distractor_length == 4 and LRA_PARAMS[32].num_distractor_snakes == 5
    assert LRA_PARAMS[64].num_distractor_snakes == 5 and LRA_PARAMS[128].num_distractor_snakes == 8
    p32, p128 = LRA_PARAMS[32], LRA_PARAMS[128]
    assert (p32.padding, p32.paddle_length, p32.paddle_thickness, p32.seed_distance, p32.marker_radius) == \
        (1, 2, 0.5, 7, 1.5)
    assert p32.snake_contrast_list == (2.0,) and p32.paddle_contrast_list == (0.75,) and p32.continuity == 1.0
    assert p128.paddle_margin_list == (2, 3) and p128.seed_distance == 20 and p128.continuity == 1.8


@pytest.mark.parametrize('label', [0, 1])
def test_markers_are_visible(label):
    rng = np.random.default_rng(label)
    image, margin, points = render_pathfinder(LRA_PARAMS[32], rng, label)
    assert image.dtype == np.uint8 and image.shape == (32, 32) and image.max() == 255
    assert margin == 1
    for point in points:
        # markers peak at 1.0 before scaling (targets 1.5, distractors 2.0): about 128 of 255, far from zero
        assert image[point] >= 100, (point, image[point])
    assert (image > 0).mean() > 0.1  # contours drawn


def test_render_is_seeded():
    a = render_pathfinder(LRA_PARAMS[32], np.random.default_rng(7), 1)[0]
    b = render_pathfinder(LRA_PARAMS[32], np.random.default_rng(7), 1)[0]
    assert np.array_equal(a, b)


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp('pf')
    folder = generate_pathfinder(root / 'generated', resolution=32, num_images=20, images_per_batch=10, seed=1,
                                 processes=1)
    return root, folder


@pytest.mark.slow
def test_generated_layout_and_balance(generated):
    root, folder = generated
    meta = (folder / DIFFICULTY / 'metadata' / '0.npy').read_text().splitlines()
    assert len(meta) == 10
    fields = meta[0].split()
    assert fields[0] == 'imgs/0' and fields[1] == 'sample_0.png' and fields[2] == '0' and len(fields) == 11
    labels = [int(line.split()[3]) for line in meta]
    assert sum(labels) == 5                          # exactly balanced per batch
    with Image.open(folder / DIFFICULTY / 'imgs' / '1' / 'sample_9.png') as im:
        assert im.mode == 'L' and im.size == (32, 32)
    # a second call finds the finished batches and draws nothing new
    mtime = (folder / DIFFICULTY / 'metadata' / '1.npy').stat().st_mtime
    generate_pathfinder(root / 'generated', resolution=32, num_images=20, images_per_batch=10, seed=1, processes=1)
    assert (folder / DIFFICULTY / 'metadata' / '1.npy').stat().st_mtime == mtime


@pytest.mark.slow
def test_datamodule_split_and_batches(generated):
    root, _ = generated
    dm = PathfinderDataModule(str(root), generate=True, num_images=20, images_per_batch=10, seed=1, processes=1,
                              batch_size=4)
    info = dm.describe()
    assert [info[s]['size'] for s in ('train', 'val', 'test')] == [16, 2, 2]
    assert sum(info['train']['label_counts']) + sum(info['val']['label_counts']) + \
        sum(info['test']['label_counts']) == 20
    assert dm.seq_len == 1024 and dm.in_chans == 1 and dm.num_classes == 2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1024, 1) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # the same ordered list and seed always give the same split (S4's random_split with seed 42)
    again = PathfinderDataModule(str(root), generate=True, num_images=20, images_per_batch=10, seed=1, processes=1)
    again.setup()
    assert again.data_val.indices == dm.data_val.indices


def _released(tmp_path, rows, resolution=32):
    root = tmp_path / f'pathfinder{resolution}' / DIFFICULTY
    (root / 'metadata').mkdir(parents=True)
    (root / 'imgs' / '0').mkdir(parents=True)
    for k in range(4):
        image = Image.fromarray(np.full((resolution, resolution), 40 * k, np.uint8))
        image.save(root / 'imgs' / '0' / f'sample_{k}.png')
    (root / 'metadata' / '0.npy').write_text(''.join(r + '\n' for r in rows))
    return root


def _row(k, label):
    return f'imgs/0 sample_{k}.png {k} {label} 1.0 14 4 2 0.5 1 1'


def test_released_layout_reader(tmp_path):
    _released(tmp_path, [_row(k, k % 2) for k in range(4)])
    dm = PathfinderDataModule(str(tmp_path), val_split=0.25, test_split=0.25)
    dm.setup()
    full = dm.data_train.dataset
    assert full.labels.tolist() == [0, 1, 0, 1]
    x, y = full[3]
    assert x.shape == (1024, 1) and torch.allclose(x, torch.full((1024, 1), 120 / 255))
    assert len(dm.data_train) == 2 and len(dm.data_val) == 1 and len(dm.data_test) == 1


def test_label_out_of_range_names_metadata_line(tmp_path):
    _released(tmp_path, [_row(0, 0), _row(1, 2)])
    with pytest.raises(LRADataError, match=r'metadata/0.npy:2: label .2. is not a class id'):
        PathfinderDataModule(str(tmp_path)).setup()


def test_corrupt_png_names_file_and_row(tmp_path):
    root = _released(tmp_path, [_row(k, k % 2) for k in range(4)])
    (root / 'imgs' / '0' / 'sample_2.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    dm = PathfinderDataModule(str(tmp_path))
    dm.setup()
    with pytest.raises(LRADataError, match=r'sample_2.png \(listed at .*0.npy:3\): cannot read image'):
        dm.data_train.dataset[2]


def test_wrong_size_and_missing_data(tmp_path):
    _released(tmp_path, [_row(k, 0) for k in range(4)], resolution=32)
    (tmp_path / 'pathfinder128').symlink_to(tmp_path / 'pathfinder32')
    dm = PathXDataModule(str(tmp_path))
    dm.setup()
    with pytest.raises(LRADataError, match='expected 128x128'):
        dm.data_train.dataset[0]
    with pytest.raises(LRADataError, match='pathfinder64'):
        PathfinderDataModule(str(tmp_path), resolution=64).setup()
