"""affNIST-style benchmark data: transforms, rendering, splits, real-file loaders."""
import gzip

import numpy as np
import pytest
import torch

from zoo.data.affine_digits import AffineDigitsDataModule, centre_in_frame, random_affine_digits


def blob_digits(n=6, size=40):
    """Small bright rectangles well inside the frame, one per image, at varying places."""
    x = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        x[i, 12 + i:20 + i, 14:22 - i // 2] = 255
    return x


def centre_of_mass(images):
    w = images.double()
    c = torch.arange(images.shape[-1], dtype=torch.float64)
    m = w.sum((-2, -1))
    return torch.stack(((w.sum(-2) * c).sum(-1), (w.sum(-1) * c).sum(-1)), -1) / m[:, None]


def test_pure_translation_moves_centre_of_mass_by_the_stored_offset():
    src = blob_digits()
    out, mats = random_affine_digits(src, 3, seed=0, max_rotation=0.0, max_shear=0.0, scale_range=(1.0, 1.0))
    torch.testing.assert_close(mats[:, :, :2], torch.eye(2).expand(len(mats), 2, 2))
    moved = centre_of_mass(src).repeat_interleave(3, 0) + mats[:, :, 2].double()
    assert (centre_of_mass(out) - moved).abs().max() < 0.05


def test_without_translation_and_ranges_the_digits_stay_upright():
    src = blob_digits()
    out, mats = random_affine_digits(src, 2, seed=0, max_rotation=0.0, max_shear=0.0, scale_range=(1.0, 1.0),
                                     translate=False)
    torch.testing.assert_close(out, src.repeat_interleave(2, 0), rtol=0, atol=0)
    torch.testing.assert_close(mats, torch.eye(2, 3).expand(len(mats), 2, 3))
    rotated, mats = random_affine_digits(src, 2, seed=0, scale_range=(1.0, 1.0), max_shear=0.0, translate=False)
    # Rotation about the centre of mass: the centre stays where it was.
    assert (centre_of_mass(rotated) - centre_of_mass(src).repeat_interleave(2, 0)).abs().max() < 0.3


def test_affine_transforms_stay_in_range_inside_frame_and_are_seeded():
    src = blob_digits()
    out, mats = random_affine_digits(src, 20, seed=1)
    assert out.shape == (120, 40, 40) and out.dtype == torch.uint8 and mats.shape == (120, 2, 2 + 1)
    a = mats[:, :, :2].double()
    det = torch.det(a)
    assert det.min() >= 0.8 ** 2 / 1.01 and det.max() <= 1.2 ** 2 * 1.01
    # Rotation part within 20 degrees: A = R Sh S with S diagonal positive and Sh unit upper triangular, so the
    # angle of A's first column is the rotation angle.
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert angle.abs().max() <= 20.0 + 1e-4 and angle.abs().max() > 10.0
    # Nothing falls off the frame: ink scales with the area factor det(A).
    ink_ratio = out.double().sum((-2, -1)) / (src.double().sum((-2, -1)).repeat_interleave(20, 0) * det)
    assert ((ink_ratio - 1).abs() < 0.05).all()
    # The stored matrix maps the source centre of mass onto the rendered one.
    com = centre_of_mass(src).repeat_interleave(20, 0)
    mapped = (a @ com.unsqueeze(-1)).squeeze(-1) + mats[:, :, 2].double()
    assert (centre_of_mass(out) - mapped).abs().max() < 0.3
    again, _ = random_affine_digits(src, 20, seed=1)
    other, _ = random_affine_digits(src, 20, seed=2)
    assert torch.equal(out, again) and not torch.equal(out, other)


@pytest.mark.slow
def test_bundled_datamodule_splits_and_normalisation():
    dm = AffineDigitsDataModule(transforms_per_digit=2, max_test_digits=200)
    dm.setup()
    assert (dm.num_classes, dm.in_chans) == (10, 1)
    assert len(dm.train_set) == 3500 and len(dm.val_set) == 500 and len(dm.test_set) == 400
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        assert torch.bincount(ds.labels, minlength=10).min() == torch.bincount(ds.labels, minlength=10).max()
    x, y = dm.train_set[0]
    assert x.shape == (1, 40, 40) and x.min() >= -1 and x.max() <= 1 and x[0, :6].max() == -1  # 6-pixel border
    # Upright training digits are centred; the test digits are moved and carry their matrices.
    assert dm.test_set.matrices.shape == (400, 2, 3)
    assert (centre_of_mass(dm.train_set.images[:200]) - 19.5).abs().mean() < 1.5
    assert (centre_of_mass(dm.test_set.images) - 19.5).abs().mean() > 2.0
    batch = next(iter(dm.test_dataloader()))
    assert batch[0].shape[1:] == (1, 40, 40)


def test_mnist_idx_source(tmp_path):
    rng = np.random.default_rng(0)
    originals = {}
    for prefix, n in (('train', 100), ('t10k', 20)):
        images = originals[prefix] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        with gzip.open(tmp_path / f'{prefix}-images-idx3-ubyte.gz', 'wb') as f:
            f.write(b'\x00\x00\x08\x03' + b''.join(int(d).to_bytes(4, 'big') for d in images.shape) + images.tobytes())
        with gzip.open(tmp_path / f'{prefix}-labels-idx1-ubyte.gz', 'wb') as f:
            f.write(b'\x00\x00\x08\x01' + n.to_bytes(4, 'big') + labels.tobytes())
    dm = AffineDigitsDataModule(source='mnist', data_dir=str(tmp_path), transforms_per_digit=3)
    dm.setup()
    assert len(dm.train_set) == 90 and len(dm.val_set) == 10 and len(dm.test_set) == 60
    frames = centre_in_frame(torch.from_numpy(originals['train']))
    assert all(any(torch.equal(t, f) for f in frames) for t in dm.train_set.images)


def test_affnist_mat_source(tmp_path):
    scipy_io = pytest.importorskip('scipy.io')
    rng = np.random.default_rng(0)
    for name, n in (('training', 20), ('validation', 10), ('test', 10)):
        images = rng.integers(0, 256, (n, 40, 40), dtype=np.uint8)
        struct = dict(image=images.reshape(n, 1600).T, label_int=(np.arange(n) % 10).reshape(1, n).astype(np.uint8),
                      affine_transform=rng.normal(size=(6, n)))
        scipy_io.savemat(tmp_path / f'{name}.mat', dict(affNISTdata=struct))
        if name == 'test':
            expected = images
    dm = AffineDigitsDataModule(source='affnist', data_dir=str(tmp_path))
    dm.setup()
    assert len(dm.train_set) == 20 and len(dm.val_set) == 10 and len(dm.test_set) == 10
    assert torch.equal(dm.test_set.images, torch.from_numpy(expected))
    assert dm.test_set.labels.tolist() == list(range(10)) and dm.test_set.matrices.shape == (10, 6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='needs data_dir'):
        AffineDigitsDataModule(source='affnist')
    with pytest.raises(ValueError, match='source must be'):
        AffineDigitsDataModule(source='cifar')
