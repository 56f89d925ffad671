import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from autolr_monai.data import BoxSmoothd
from autolr_monai.networks import DualPathResNet3D
from autolr_monai.sampling import IGNORE_LABEL, RandDualPathPatchd
from autolr_monai.sampling.patches import rotation_matrix

SPACING = (1.0, 1.0, 1.5)


def _volume(array, spacing=SPACING):
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32), affine=torch.diag(torch.tensor([*spacing, 1.0])))


def test_unaugmented_patches_equal_the_network_inputs_of_a_crop():
    net = DualPathResNet3D(high_blocks=[["conv", 2], ["RB", 2]], low_blocks=[["conv", 2], ["RA", 2], ["RA", 2]],
                           fc_channels=[4])  # fmt: skip
    m, s = net.input_margin, 8
    torch.manual_seed(0)
    image = _volume(torch.randn(1, 60, 62, 64))
    label = _volume(torch.randint(0, 5, (1, 60, 62, 64)))
    d = BoxSmoothd()({"image": image, "label": label})
    d["patch_centres"] = np.array([[30, 31, 32], [29, 33, 31]])
    t = RandDualPathPatchd(s, net.high_margin, net.low_margin, net.downsample, spacing_jitter=0.0, rotate_range=(0, 0, 0))
    for patch, centre in zip(t(d), d["patch_centres"]):
        lo = centre - s // 2 - m
        crop = image.as_tensor()[None, :, lo[0] : lo[0] + s + 2 * m, lo[1] : lo[1] + s + 2 * m, lo[2] : lo[2] + s + 2 * m]
        high, low = net.split_input(crop)
        assert torch.allclose(patch["image"], high[0], atol=1e-4)
        assert torch.allclose(patch["image_low"], low[0], atol=1e-4)
        start = centre - s // 2
        expected = label[0, start[0] : start[0] + s, start[1] : start[1] + s, start[2] : start[2] + s]
        assert torch.equal(patch["label"][0].long(), expected.long())


def test_both_paths_share_one_rotation_and_jitter():
    """On a linear image, the low-res input at offset f(j-l) equals the high-res input at the same offset."""
    h, lm, f, s = 3, 4, 4, 9
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in (70, 72, 74)], indexing="ij"))
    image = _volume((0.3 * coords[0] - 0.7 * coords[1] + 1.1 * coords[2])[None])
    d = BoxSmoothd()({"image": image, "label": _volume(np.zeros((1, 70, 72, 74)))})
    d["patch_centres"] = np.array([[35, 36, 37]] * 4)
    t = RandDualPathPatchd(s, h, lm, f, spacing_jitter=0.1, rotate_range=(10, 4, 4))
    t.set_random_state(3)
    patches = t(d)
    assert not torch.allclose(patches[0]["image"], patches[1]["image"])  # random per patch
    for p in patches:
        high, low = p["image"][0], p["image_low"][0]
        # high voxel i <-> offset i - h - s//2; low voxel j <-> offset f (j - lm) - s//2
        for i_off, j in [(0, lm), (4, lm + 1), (8, lm + 2)]:
            i = h + i_off
            assert float(low[j, j, j]) == pytest.approx(float(high[i, i, i]), abs=1e-3)


def test_rotation_moves_labels_consistently_with_the_image():
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in (60, 60, 40)], indexing="ij")).astype(np.float64)
    sphere = (((coords[0] - 30) ** 2 + (coords[1] - 33) ** 2 + ((coords[2] - 20) * 1.5) ** 2) < 100).astype(np.float32)
    d = BoxSmoothd()({"image": _volume(sphere[None] * 10.0), "label": _volume(sphere[None])})
    d["patch_centres"] = np.array([[30, 30, 20]] * 8)
    t = RandDualPathPatchd(16, 2, 1, 4, spacing_jitter=0.1, rotate_range=(10, 4, 4))
    t.set_random_state(0)
    for p in t(d):
        image_centre = p["image"][0, 2:-2, 2:-2, 2:-2] > 5.0
        label = p["label"][0] == 1
        agreement = float((image_centre == label).float().mean())
        assert agreement > 0.97, agreement


def test_patch_outside_the_volume_is_ignored():
    d = BoxSmoothd()({"image": _volume(torch.zeros(1, 10, 10, 10)), "label": _volume(torch.ones(1, 10, 10, 10))})
    d["patch_centres"] = np.array([[0, 0, 0]])
    (p,) = RandDualPathPatchd(8, 1, 1, 4, spacing_jitter=0.0, rotate_range=(0, 0, 0))(d)
    label = p["label"][0]
    assert (label[4:, 4:, 4:] == 1).all()
    assert (label[:4] == IGNORE_LABEL).all() and (label[:, :4] == IGNORE_LABEL).all()


def test_rotation_matrix():
    r = rotation_matrix([10.0, -4.0, 3.0])
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    assert np.allclose(rotation_matrix([0, 0, 90]) @ [1, 0, 0], [0, 1, 0])
