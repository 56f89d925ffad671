"""Deterministic synthetic CT phantoms of the trunk with VISCERAL label maps: the bundle's embedded dataset.

The VISCERAL Anatomy3 volumes cannot be downloaded, so the default dataset is generated. Each case looks like a
contrast-enhanced (portal-venous) CT from the lung apices to below the urinary bladder, so that a network has to
use intensity *and* context: liver, spleen, pancreas and kidneys have similar HU and differ by position and shape.

Model
    Anatomy is built in *standard patient coordinates*: millimetres, RAS (+x towards the patient's right, +y
    anterior, +z superior), origin at the centre of the trunk. Shapes are ellipsoids with random low-order
    harmonic "wobble", smoothed tubes (vessels, airways, bowel, muscles), elliptic columns (spine, sternum) and
    layers that follow the body outline (skin fat, muscle wall, ribs). Each shape paints a *tissue*, which sets
    the HU value, and a *label* into two uint8 volumes, evaluated only on the shape's bounding box. Shapes are
    painted in a fixed priority order (body wall < lungs < organs < bowel < heart < vessels < airways < bone),
    optionally only over given tissues (bowel only into fat, lung vessels only into lung), so overlaps resolve
    without holes. Labels are the geometric model
    (nearest, never blurred); the image is the per-case tissue HU, blurred for partial volume (more along z,
    like a slice profile), plus slightly correlated Gaussian noise, clipped to [-1024, 3071] and stored as int16.

Per-case variation (all from ``np.random.default_rng(seed)``)
    body width and depth (x0.9-1.1 each), subcutaneous fat and muscle wall thickness, organ sizes (+-10% per
    axis) and positions (+-10 mm), ellipsoid shape wobble, a breathing offset of the diaphragm and the organs
    under it, tissue HU (a few HU), blur and noise level; with ``spacing=None`` also the voxel spacing (in-plane
    U(1.4, 1.8) mm, slice thickness 2.0, 2.5 or 3.0 mm). The anatomy does not depend on the spacing: the same seed
    at another spacing gives the same patient.

Not drawn
    The adrenal glands (labels ``adrenal_gland_right/left``: a few millimetres thick, they would be a voxel or
    two at the coarse demo resolution) and the thyroid gland (``thyroid_gland``: in the neck, outside a
    thorax-abdomen field of view). Real VISCERAL data has them; on phantoms those classes are absent.

Stored orientation
    Like DICOM-converted CT: the voxel axes run towards the patient's left, posterior and superior
    (``nib.aff2axcodes(affine) == ('L', 'P', 'S')``), with a per-case origin and a small rotation about z (up to
    3 degrees), so the affine is neither identity nor diagonal. The field of view is ``fov_mm`` around the origin
    covered by ``round(fov / spacing)`` voxels; structures outside a smaller z field of view are cut off like in a
    real scan, but the body must fit in x and y (otherwise ``ValueError``).

CLI: ``python -m autolr_monai.data --output_dir DIR --n_cases 20 --seed 0 [--spacing "[1.5,1.5,2.5]"]``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from autolr_monai.data.labels import LABEL_NAMES, label_value

logger = logging.getLogger("autolr_monai.data.phantom")

Triple = tuple[float, float, float]

# ---------------------------------------------------------------------------------------------------------------
# Acquisition
DEFAULT_FOV_MM: Triple = (400.0, 400.0, 480.0)
IN_PLANE_SPACING_MM = (1.4, 1.8)  # drawn uniformly, same for x and y
SLICE_THICKNESS_MM = (2.0, 2.5, 3.0)  # drawn from these
MAX_ROTATION_DEG = 3.0  # about z, in the stored affine
ORIGIN_OFFSET_MM = (20.0, 20.0, 150.0)  # +- world position of the grid centre, x and y around 0, z around:
ORIGIN_Z_MM = -250.0  # (the couch position)
BODY_SHIFT_MM = (5.0, 5.0, 8.0)  # +- the patient is not exactly centred in the field of view
BODY_SCALE = (0.9, 1.1)  # per case, separately for width (x) and depth (y)
BLUR_SIGMA_VOXELS = (0.6, 0.8)  # in-plane partial-volume blur, drawn per case
BLUR_SIGMA_Z_EXTRA = 0.3  # extra sigma along z (slice profile), in voxels
NOISE_HU = (10.0, 20.0)  # std of the image noise, drawn per case
NOISE_CORRELATION_VOXELS = 0.6  # in-plane Gaussian correlation of the noise
HU_RANGE = (-1024, 3071)

# Anatomy variation
ORGAN_SHIFT_MM = 10.0
ORGAN_SIZE = 0.10  # +- relative, per semi-axis
ORGAN_TILT_DEG = 5.0  # +- about each axis
WOBBLE = 0.06  # amplitude of each of the three harmonics on an ellipsoid radius
BREATH_MM = 8.0  # +- z offset of the diaphragm and the organs under it
FAT_MM = (6.0, 24.0)  # subcutaneous fat; it adds to the outside of the muscle wall
FAT_REFERENCE_MM = 14.0  # the body outline below is the skin of a patient with this much fat
MUSCLE_MM = (9.0, 13.0)  # trunk wall muscle

# Body outline: half width and half depth (standard coordinates, mm) against z; the back lies flat on the couch.
Z_BODY = (-260.0, -215.0, -170.0, -120.0, -60.0, 0.0, 60.0, 120.0, 170.0, 200.0, 225.0, 260.0)
BODY_HALF_WIDTH = (155.0, 155.0, 152.0, 146.0, 146.0, 146.0, 150.0, 148.0, 140.0, 122.0, 90.0, 72.0)
BODY_HALF_DEPTH = (102.0, 102.0, 104.0, 108.0, 110.0, 110.0, 112.0, 110.0, 104.0, 95.0, 76.0, 66.0)
Y_COUCH = -104.0  # the flattened back (reference fat); the couch lies under the skin
COUCH_THICKNESS_MM = 5.0
COUCH_GAP_MM = 3.0  # between the skin of the back and the couch
COUCH_HALF_WIDTH_MM = 230.0

# Spine: centre of the vertebral bodies (y) against z, and the vertebral levels.
Z_SPINE = (-260.0, -200.0, -160.0, -110.0, -60.0, -10.0, 60.0, 140.0, 200.0, 260.0)
Y_SPINE = (-55.0, -48.0, -36.0, -30.0, -30.0, -40.0, -52.0, -50.0, -38.0, -22.0)
Z_L1 = -60.0  # centre of the L1 body: the level of the renal hila
LUMBAR_PITCH_MM = 30.0
THORACIC_PITCH_MM = 24.0
THORACOLUMBAR_GAP_MM = 27.0  # L1 centre to T12 centre
CERVICAL_PITCH_MM = 20.0
VERTEBRA_HEIGHT_MM = {"C": 14.0, "T": 19.0, "L": 23.0}
SPINAL_CANAL_MM = 8.0
CORTEX_MM = 2.5

# Thorax
DOME_RIGHT_Z = 30.0
DOME_LEFT_Z = 18.0
DOME_DEPTH_MM = 80.0  # how far the diaphragm falls from a dome top to its rim (paraboloid)
DOME_HALF_SPAN_MM = (110.0, 120.0)  # x, y
DOME_X_MM = 60.0
DIAPHRAGM_MM = 5.0
Z_APEX = 205.0
APEX_CURVATURE_MM = 320.0
MEDIASTINUM_X = -5.0
RIB_COUNT = 12
RIB_DROP_MM = 110.0  # a rib's anterior end lies this much lower than its head
RIB_HALF_HEIGHT_MM = 5.0
RIB_HALF_THICKNESS_MM = 4.0
TRUE_RIBS = 7  # ribs 1-7 reach the sternum through costal cartilage
STERNUM_Z = (15.0, 40.0, 150.0, 190.0)  # xiphoid tip, body start, manubrium start, manubrium top
STERNUM_HALF_WIDTH = (8.0, 16.0, 16.0, 26.0)
STERNUM_HALF_THICKNESS = (5.0, 7.0, 7.0, 8.0)

# Abdomen and pelvis
RECTUS_Z = (-232.0, 15.0)  # pubis to costal margin
RECTUS_HALF_WIDTH = (35.0, 80.0)  # at the pubis, at the costal margin
LINEA_ALBA_MM = 4.0  # half gap between the two recti
SMALL_BOWEL_BOX = ((-105.0, -25.0, -185.0), (100.0, 95.0, -85.0))
BOWEL_WAVELENGTH_MM = (80.0, 140.0)
BOWEL_WALL_LEVEL = 0.85  # loop wall where the norm of the two bowel fields is below this; lumen inside
BOWEL_LUMEN_FRACTION = 0.75
GAS_LEVEL = 0.9  # bowel content is gas where the content field exceeds this
ILIAC_CREST_Z = -148.0
ACETABULUM_Z = -215.0


# ---------------------------------------------------------------------------------------------------------------
# Tissues: the HU of each is drawn per case from its range (portal-venous phase).
@dataclass(frozen=True)
class _Tissue:
    name: str
    hu: tuple[float, float]


TISSUES: tuple[_Tissue, ...] = (
    _Tissue("air", (-1000.0, -1000.0)),
    _Tissue("couch", (150.0, 250.0)),
    _Tissue("fat_subcutaneous", (-110.0, -90.0)),
    _Tissue("fat_visceral", (-100.0, -80.0)),
    _Tissue("muscle", (45.0, 60.0)),
    _Tissue("lung", (-870.0, -830.0)),
    _Tissue("liver", (100.0, 120.0)),
    _Tissue("spleen", (110.0, 130.0)),
    _Tissue("kidney_cortex", (160.0, 195.0)),
    _Tissue("kidney_medulla", (105.0, 130.0)),
    _Tissue("pancreas", (80.0, 100.0)),
    _Tissue("urine", (0.0, 15.0)),
    _Tissue("bile", (0.0, 20.0)),
    _Tissue("wall", (35.0, 55.0)),  # stomach, bladder, gallbladder, airway walls; oesophagus
    _Tissue("bowel_wall", (45.0, 65.0)),
    _Tissue("bowel_content", (5.0, 30.0)),
    _Tissue("stool", (-60.0, -20.0)),
    _Tissue("artery", (190.0, 240.0)),
    _Tissue("vein", (140.0, 170.0)),
    _Tissue("pulmonary_blood", (140.0, 180.0)),
    _Tissue("heart_blood", (150.0, 190.0)),
    _Tissue("myocardium", (70.0, 100.0)),
    _Tissue("bone_cortex", (750.0, 900.0)),
    _Tissue("bone_marrow", (300.0, 360.0)),
    _Tissue("cartilage", (100.0, 140.0)),
    _Tissue("disc", (70.0, 100.0)),
    _Tissue("csf", (10.0, 30.0)),
)
TISSUE_INDEX: dict[str, int] = {t.name: i for i, t in enumerate(TISSUES)}

#: Structures of the label table the phantom draws (all but the adrenal glands and the thyroid).
DRAWN_STRUCTURES: tuple[str, ...] = (
    "liver", "spleen", "kidney_right", "kidney_left", "lung_right", "lung_left", "aorta", "trachea", "sternum",
    "urinary_bladder", "psoas_major_right", "psoas_major_left", "rectus_abdominis_right", "rectus_abdominis_left",
    "pancreas", "gallbladder", "vertebra_L1",
)  # fmt: skip
SIDES = ((1.0, "right"), (-1.0, "left"))  # +x is the patient's right in RAS


@cache
def _tissue_mask(names: tuple[str, ...]) -> np.ndarray:
    lut = np.zeros(len(TISSUES), bool)
    lut[[TISSUE_INDEX[n] for n in names]] = True
    return lut


def _all_tissues_but(*names: str) -> tuple[str, ...]:
    return tuple(t.name for t in TISSUES if t.name not in names)


# ---------------------------------------------------------------------------------------------------------------
# Canvas and shapes
@dataclass(frozen=True)
class _Box:
    """A block of voxels and the standard patient coordinates of its voxels: x, y (n, m, 1) and z (1, 1, k)."""

    sl: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.shape[0], self.x.shape[1], self.z.shape[2])


class _Shape(Protocol):
    def bounds(self) -> tuple[np.ndarray, np.ndarray]: ...

    def mask(self, box: _Box) -> np.ndarray: ...


Clip = Callable[[_Box], np.ndarray]


class _Canvas:
    """Tissue and label volumes plus the standard patient coordinates of every voxel.

    ``vox2pat`` maps voxel indices to standard patient coordinates; it may rotate about z only, so x and y depend on
    the first two indices and z on the third.
    """

    def __init__(self, shape: tuple[int, int, int], vox2pat: np.ndarray):
        self.shape = shape
        self.pat2vox = np.linalg.inv(vox2pat)
        i, j, k = (np.arange(n, dtype=np.float64) for n in shape)
        m = vox2pat
        self.x = (m[0, 0] * i[:, None] + m[0, 1] * j[None, :] + m[0, 3]).astype(np.float32)
        self.y = (m[1, 0] * i[:, None] + m[1, 1] * j[None, :] + m[1, 3]).astype(np.float32)
        self.z = (m[2, 2] * k + m[2, 3]).astype(np.float32)
        self.tissue = np.zeros(shape, np.uint8)
        self.label = np.zeros(shape, np.uint8)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> _Box | None:
        """The voxels whose centres may lie in the patient-coordinate box [lo, hi]; None if none."""
        corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        vox = corners @ self.pat2vox.T
        start = np.maximum(np.floor(vox[:, :3].min(0)).astype(int), 0)
        stop = np.minimum(np.ceil(vox[:, :3].max(0)).astype(int) + 1, self.shape)
        if np.any(stop <= start):
            return None
        si, sj, sk = (slice(a, b) for a, b in zip(start, stop))
        return _Box((si, sj, sk), self.x[si, sj][:, :, None], self.y[si, sj][:, :, None], self.z[sk][None, None, :])

    def paint(
        self, box: _Box, mask: np.ndarray, tissue: str, label: str | None, over: tuple[str, ...] | None = None
    ) -> None:
        """Set ``tissue`` (and ``label``; None keeps the current label) where ``mask``, only over tissues ``over``."""
        tis = self.tissue[box.sl]
        mask = np.broadcast_to(mask, box.shape)
        if over is not None:
            mask = mask & _tissue_mask(over)[tis]
        tis[mask] = TISSUE_INDEX[tissue]
        if label is not None:
            self.label[box.sl][mask] = label_value(label)

    def draw(
        self,
        shapes: _Shape | Sequence[_Shape],
        tissue: str,
        label: str | None = "background",
        over: tuple[str, ...] | None = None,
        clip: Clip | None = None,
    ) -> None:
        """Paint each shape on its own bounding box (optionally intersected with ``clip``)."""
        for shape in shapes if isinstance(shapes, (list, tuple)) else (shapes,):
            box = self.box(*shape.bounds())
            if box is None:
                continue
            mask = shape.mask(box)
            if clip is not None:
                mask = mask & clip(box)
            self.paint(box, mask, tissue, label, over)


def _f32(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix of extrinsic x, y, z rotations (degrees)."""
    return Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix().astype(np.float32)


@dataclass(frozen=True)
class _Wobble:
    """Random low-order harmonics that modulate the radius of a shape in its normalised coordinates."""

    freq: np.ndarray  # (n, 3)
    phase: np.ndarray  # (n,)
    amp: np.ndarray  # (n,)

    @classmethod
    def draw(cls, rng: np.random.Generator, amplitude: float = WOBBLE, n: int = 3) -> _Wobble:
        freq = rng.normal(0.0, 1.6, (n, 3))
        return cls(_f32(freq), _f32(rng.uniform(0, 2 * np.pi, n)), _f32(rng.uniform(0, amplitude, n)))

    @property
    def max_factor(self) -> float:
        return 1.0 + float(self.amp.sum())

    def factor(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = np.ones(np.broadcast_shapes(u.shape, v.shape, w.shape), np.float32)
        for f, p, a in zip(self.freq, self.phase, self.amp):
            out += a * np.sin(f[0] * u + f[1] * v + f[2] * w + p)
        return out


@dataclass(frozen=True)
class _Ellipsoid:
    center: np.ndarray
    radii: np.ndarray
    rot: np.ndarray  # columns: the local axes in patient coordinates
    wobble: _Wobble | None = None

    def scaled(self, factor: float | Sequence[float]) -> _Ellipsoid:
        return _Ellipsoid(self.center, _f32(self.radii * np.asarray(factor, np.float32)), self.rot, self.wobble)

    def shrunk(self, mm: float) -> _Ellipsoid:
        return _Ellipsoid(self.center, _f32(np.maximum(self.radii - mm, 1.0)), self.rot, self.wobble)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = float(self.radii.max()) * (self.wobble.max_factor if self.wobble else 1.0)
        return self.center - reach, self.center + reach

    def local(self, box: _Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised local coordinates (the unit sphere is the ellipsoid)."""
        dx, dy, dz = box.x - self.center[0], box.y - self.center[1], box.z - self.center[2]
        r = self.rot
        return tuple(  # type: ignore[return-value]
            (dx * r[0, a] + dy * r[1, a] + dz * r[2, a]) / self.radii[a] for a in range(3)
        )

    def mask(self, box: _Box) -> np.ndarray:
        u, v, w = self.local(box)
        r2 = u * u + v * v + w * w
        if self.wobble is None:
            return r2 < 1.0
        return r2 < self.wobble.factor(u, v, w) ** 2


@dataclass(frozen=True)
class _Capsule:
    """A segment a-b with a radius varying linearly from ra to rb (a piece of a tube)."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def mask(self, box: _Box) -> np.ndarray:
        d = self.b - self.a
        dx, dy, dz = box.x - self.a[0], box.y - self.a[1], box.z - self.a[2]
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        ex, ey, ez = dx - t * d[0], dy - t * d[1], dz - t * d[2]
        r = self.ra + t * (self.rb - self.ra)
        return ex * ex + ey * ey + ez * ez < r * r


@dataclass(frozen=True)
class _Column:
    """A vertical column with an elliptic cross-section whose centre and radii are interpolated along z."""

    z: Sequence[float]
    cx: Sequence[float]
    cy: Sequence[float]
    rx: Sequence[float]
    ry: Sequence[float]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        cx, cy, rx, ry = (np.asarray(v, float) for v in (self.cx, self.cy, self.rx, self.ry))
        lo = [float((cx - rx).min()), float((cy - ry).min()), float(min(self.z))]
        hi = [float((cx + rx).max()), float((cy + ry).max()), float(max(self.z))]
        return np.array(lo), np.array(hi)

    def mask(self, box: _Box) -> np.ndarray:
        z = box.z
        cx, cy, rx, ry = (_f32(np.interp(z, self.z, v)) for v in (self.cx, self.cy, self.rx, self.ry))
        inside = (z >= min(self.z)) & (z <= max(self.z))
        return inside & (((box.x - cx) / rx) ** 2 + ((box.y - cy) / ry) ** 2 < 1.0)


@dataclass(frozen=True)
class _Region:
    """Any mask function on a bounding box."""

    lo: Sequence[float]
    hi: Sequence[float]
    fn: Clip

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.lo, float), np.asarray(self.hi, float)

    def mask(self, box: _Box) -> np.ndarray:
        return self.fn(box)


def _tube(
    points: Sequence[Sequence[float]],
    radii: Sequence[float],
    step_mm: float = 6.0,
    lobulation: tuple[float, float, float] | None = None,
) -> list[_Capsule]:
    """A tube along a Catmull-Rom curve through ``points``; radii are interpolated between points and optionally
    modulated by ``lobulation`` = (relative amplitude, wavelength mm, phase) along the arc length."""
    p = np.asarray(points, float)
    r = np.asarray(radii, float)
    ext = np.vstack([p[0], p, p[-1]])
    centres, rad = [], []
    for i in range(len(p) - 1):
        p0, p1, p2, p3 = ext[i : i + 4]
        n = max(1, int(np.ceil(np.linalg.norm(p2 - p1) / step_mm)))
        t = (np.arange(n) / n)[:, None]
        centres.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
        rad.append(r[i] + (r[i + 1] - r[i]) * t[:, 0])
    c = np.vstack([*centres, p[-1:]])
    rr = np.concatenate([*rad, r[-1:]])
    if lobulation is not None:
        amp, wavelength, phase = lobulation
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))])
        rr = rr * (1.0 + amp * np.sin(2 * np.pi * s / wavelength + phase))
    return [_Capsule(_f32(c[i]), _f32(c[i + 1]), float(rr[i]), float(rr[i + 1])) for i in range(len(c) - 1)]


@dataclass(frozen=True)
class _WaveField:
    """A smooth random field (sum of plane waves, unit variance) in standard patient coordinates."""

    k: np.ndarray  # (n, 3) rad/mm
    phase: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, wavelength_mm: tuple[float, float], n: int = 8) -> _WaveField:
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        k = direction * (2 * np.pi / rng.uniform(*wavelength_mm, (n, 1)))
        return cls(_f32(k), _f32(rng.uniform(0, 2 * np.pi, n)))

    def __call__(self, box: _Box) -> np.ndarray:
        out = np.zeros(box.shape, np.float32)
        for k, p in zip(self.k, self.phase):
            out += np.cos(k[0] * box.x + k[1] * box.y + (k[2] * box.z + p))
        return out * np.float32(np.sqrt(2.0 / len(self.phase)))


# ---------------------------------------------------------------------------------------------------------------
# The case: random anatomy parameters and the geometry helpers shared by the structures.
class _Case:
    def __init__(self, canvas: _Canvas, rng: np.random.Generator):
        self.canvas = canvas
        self.rng = rng
        self.hu = _f32([rng.uniform(*t.hu) for t in TISSUES])
        fat = float(rng.uniform(*FAT_MM))
        self.muscle = float(rng.uniform(*MUSCLE_MM))
        self.skin_inset = FAT_REFERENCE_MM - fat  # negative: more fat than the reference outline
        self.wall_inset = FAT_REFERENCE_MM  # outer surface of the muscle wall
        self.cavity_inset = FAT_REFERENCE_MM + self.muscle
        self.breath = float(rng.uniform(-BREATH_MM, BREATH_MM))
        self.spine_dy = float(rng.uniform(-5.0, 5.0))
        self.dome_z = {
            "right": DOME_RIGHT_Z + self.breath + float(rng.uniform(-5.0, 5.0)),
            "left": DOME_LEFT_Z + self.breath + float(rng.uniform(-5.0, 5.0)),
        }
        self.kidney_hilum: dict[str, np.ndarray] = {}

    # random variation
    def uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def ellipsoid(
        self,
        center: Sequence[float],
        radii: Sequence[float],
        angles_deg: Sequence[float] = (0.0, 0.0, 0.0),
        shift_mm: float = ORGAN_SHIFT_MM,
        size: float = ORGAN_SIZE,
        wobble: float = WOBBLE,
    ) -> _Ellipsoid:
        """An ellipsoid with its position, size and shape perturbed for this case."""
        c = np.asarray(center, float) + self.rng.uniform(-shift_mm, shift_mm, 3)
        r = np.asarray(radii, float) * self.rng.uniform(1 - size, 1 + size, 3)
        angles = np.asarray(angles_deg, float) + self.rng.uniform(-ORGAN_TILT_DEG, ORGAN_TILT_DEG, 3)
        return _Ellipsoid(_f32(c), _f32(r), _rotation(angles), _Wobble.draw(self.rng, wobble))

    def jitter(self, points: Sequence[Sequence[float]], mm: float) -> np.ndarray:
        """Points moved together by one random offset of up to ``mm`` per axis."""
        return np.asarray(points, float) + self.rng.uniform(-mm, mm, 3)

    # geometry
    def spine_y(self, z: np.ndarray | float) -> np.ndarray:
        return np.interp(z, Z_SPINE, Y_SPINE) + self.spine_dy

    def inside(self, box: _Box, inset: float = 0.0) -> np.ndarray:
        """Inside the body outline moved ``inset`` mm inwards (the back is flat on the couch)."""
        a = _f32(np.interp(box.z, Z_BODY, BODY_HALF_WIDTH) - inset)
        b = _f32(np.interp(box.z, Z_BODY, BODY_HALF_DEPTH) - inset)
        return ((box.x / a) ** 2 + (box.y / b) ** 2 < 1.0) & (box.y > Y_COUCH + inset)

    def cavity(self, box: _Box) -> np.ndarray:
        """Inside the trunk wall (skin fat and muscle)."""
        return self.inside(box, self.cavity_inset)

    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z of the diaphragm: two paraboloid domes, the right one higher."""
        sx, sy = DOME_HALF_SPAN_MM
        right = self.dome_z["right"] - DOME_DEPTH_MM * (((x - DOME_X_MM) / sx) ** 2 + (y / sy) ** 2)
        left = self.dome_z["left"] - DOME_DEPTH_MM * (((x + DOME_X_MM) / sx) ** 2 + (y / sy) ** 2)
        return np.maximum(right, left)

    def below_diaphragm(self, box: _Box) -> np.ndarray:
        return (box.z < self.dome(box.x, box.y)) & self.cavity(box)

    def above_diaphragm(self, box: _Box, gap: float = DIAPHRAGM_MM) -> np.ndarray:
        return (box.z > self.dome(box.x, box.y) + gap) & self.cavity(box)


WHOLE_BODY_BOX = ((-200.0, -130.0, -260.0), (200.0, 130.0, 260.0))


# ---------------------------------------------------------------------------------------------------------------
# Structures, in painting (priority) order.
def _draw_body(case: _Case) -> None:
    """Couch, skin fat, trunk wall muscle and the (fat-filled) body cavity."""
    c = case.canvas
    top = Y_COUCH + case.skin_inset - COUCH_GAP_MM
    couch = _Region(
        (-COUCH_HALF_WIDTH_MM, top - COUCH_THICKNESS_MM, -260.0),
        (COUCH_HALF_WIDTH_MM, top, 260.0),
        lambda b: (b.y < top) & (b.y > top - COUCH_THICKNESS_MM),
    )
    c.draw(couch, "couch")
    lo, hi = WHOLE_BODY_BOX
    c.draw(_Region(lo, hi, lambda b: case.inside(b, case.skin_inset)), "fat_subcutaneous")
    c.draw(_Region(lo, hi, lambda b: case.inside(b, case.wall_inset)), "muscle")
    c.draw(_Region(lo, hi, case.cavity), "fat_visceral")


def _draw_back_muscles(case: _Case) -> None:
    """Erector spinae, quadratus lumborum and gluteal muscles (unlabelled)."""
    c = case.canvas
    z = np.linspace(-260.0, 260.0, 27)
    in_wall = lambda b: case.inside(b, case.wall_inset)  # noqa: E731
    for s, _ in SIDES:
        erector = _Column(
            z, s * 32.0 * np.ones_like(z), case.spine_y(z) - 45.0, 26.0 * np.ones_like(z), 22.0 * np.ones_like(z)
        )
        c.draw(erector, "muscle", clip=in_wall)
        quadratus = _tube(case.jitter([(s * 52, -58, -35), (s * 62, -62, -90), (s * 66, -60, -145)], 4.0), (8, 14, 12))
        c.draw(quadratus, "muscle", clip=in_wall)
        gluteus = case.ellipsoid((s * 100, -50, -235), (50, 50, 60), shift_mm=4.0)
        c.draw(gluteus, "muscle", clip=in_wall)


def _draw_rectus(case: _Case) -> None:
    """Rectus abdominis: the anterior part of the muscle wall beside the linea alba, costal margin to pubis."""
    c = case.canvas
    top = RECTUS_Z[1] + case.uniform(-10.0, 10.0)
    for s, side in SIDES:

        def band(b: _Box, s: float = s) -> np.ndarray:
            half_width = _f32(np.interp(b.z, RECTUS_Z, RECTUS_HALF_WIDTH))
            xs = s * b.x
            return (
                case.inside(b, case.wall_inset)
                & ~case.cavity(b)
                & (b.y > 0)
                & (xs > LINEA_ALBA_MM)
                & (xs < half_width)
                & (b.z > RECTUS_Z[0])
                & (b.z < top)
            )

        lo = (min(0.0, s * 100.0), 0.0, RECTUS_Z[0])
        hi = (max(0.0, s * 100.0), 130.0, top)
        c.draw(_Region(lo, hi, band), "muscle", f"rectus_abdominis_{side}")


def _draw_diaphragm(case: _Case) -> None:
    c = case.canvas
    sheet = lambda b: (np.abs(b.z - case.dome(b.x, b.y) - DIAPHRAGM_MM / 2) < DIAPHRAGM_MM / 2) & case.cavity(b)  # noqa: E731
    c.draw(_Region((-200, -130, -90), (200, 130, 50), sheet), "muscle")


def _draw_lungs(case: _Case) -> None:
    """Lungs: the thoracic cavity above the diaphragm and below the apices, left and right of the mediastinum."""
    c = case.canvas
    mediastinum_x = MEDIASTINUM_X + case.uniform(-5.0, 5.0)
    apex = Z_APEX + case.uniform(-8.0, 8.0)
    for s, side in SIDES:

        def lung(b: _Box, s: float = s) -> np.ndarray:
            half_mediastinum = _f32(np.interp(b.y, (-150.0, -40.0, 30.0, 150.0), (30.0, 28.0, 18.0, 12.0)))
            below_apex = b.z < apex - ((np.abs(b.x) - 50.0) ** 2 + (b.y + 15.0) ** 2) / APEX_CURVATURE_MM
            return case.above_diaphragm(b) & below_apex & (s * (b.x - mediastinum_x) > half_mediastinum)

        lo = (min(0.0, s * 200.0), -130.0, -100.0)
        hi = (max(0.0, s * 200.0), 130.0, apex)
        c.draw(_Region(lo, hi, lung), "lung", f"lung_{side}", over=("fat_visceral",))


def _draw_stomach(case: _Case) -> None:
    c = case.canvas
    b = case.breath
    body = case.ellipsoid((-50, 25, -10 + b), (42, 38, 50), (0, 0, 20))
    antrum = _tube(case.jitter([(-40, 40, -40 + b), (-10, 50, -52 + b), (12, 42, -52 + b)], 5.0), (24, 18, 13))
    gas_level = float(body.center[1]) + case.uniform(0.0, 30.0)  # gas floats anteriorly in a supine patient
    c.draw([body, *antrum], "wall", clip=case.below_diaphragm)
    inner = [body.shrunk(5.0), *(_Capsule(p.a, p.b, p.ra - 5.0, p.rb - 5.0) for p in antrum)]
    c.draw(inner, "bowel_content", over=("wall",), clip=case.below_diaphragm)
    c.draw(inner, "air", over=("bowel_content",), clip=lambda bx: bx.y > gas_level)


def _draw_liver(case: _Case) -> None:
    c = case.canvas
    b = case.breath
    right_lobe = case.ellipsoid((55, 10, -25 + b), (84, 85, 78), (0, 10, 0))
    left_lobe = case.ellipsoid((-10, 40, -5 + b), (50, 40, 33), (0, 0, 20))
    c.draw([right_lobe, left_lobe], "liver", "liver", clip=case.below_diaphragm)


def _draw_spleen(case: _Case) -> None:
    b = case.breath
    spleen = case.ellipsoid((-86, -36, -12 + b), (26, 60, 52), (-20, 0, 30))
    case.canvas.draw(spleen, "spleen", "spleen", clip=case.below_diaphragm)


def _draw_psoas(case: _Case) -> None:
    """Psoas major: from L1 along the lumbar spine, widening, then anterolaterally over the pelvic brim."""
    ys = case.spine_y
    for s, side in SIDES:
        z = np.array([-50.0, -95.0, -135.0, -170.0, -205.0, -245.0])
        x = s * np.array([26.0, 37.0, 47.0, 58.0, 72.0, 80.0])
        y = ys(z) + np.array([2.0, 0.0, 5.0, 20.0, 72.0, 100.0])
        pts = case.jitter(np.stack([x, y, z], 1), 3.0)
        radii = np.array([7.0, 14.0, 19.0, 21.0, 18.0, 15.0]) * case.uniform(0.9, 1.1)
        case.canvas.draw(_tube(pts, radii), "muscle", f"psoas_major_{side}")


def _draw_kidneys(case: _Case) -> None:
    """Kidneys beside the spine at L1-L3 (right lower): cortex, medulla, sinus fat and pelvis (all labelled)."""
    c = case.canvas
    for s, side in SIDES:
        z = (-82.0 if side == "right" else -68.0) + 0.6 * case.breath  # right lower, by 4-24 mm
        kidney = case.ellipsoid((s * 74, -32, z), (29, 25, 55), (0, -s * 15, -s * 35), shift_mm=5.0)
        hilum_dir = kidney.rot[:, 0] * np.sign(-s * kidney.rot[0, 0])  # the local x axis, turned medially
        sinus_centre = kidney.center + hilum_dir * kidney.radii[0] * 0.45
        sinus = _Ellipsoid(_f32(sinus_centre), _f32(kidney.radii * (0.45, 0.5, 0.55)), kidney.rot)
        pelvis = _Ellipsoid(_f32(sinus_centre + hilum_dir * 3.0), _f32(kidney.radii * (0.3, 0.35, 0.3)), kidney.rot)
        label = f"kidney_{side}"
        c.draw(kidney, "kidney_cortex", label, clip=case.cavity)
        c.draw(kidney.scaled(0.72), "kidney_medulla", label)
        c.draw(sinus, "fat_visceral", label)
        c.draw(pelvis, "urine", label)
        case.kidney_hilum[side] = sinus_centre + hilum_dir * kidney.radii[0] * 0.7


def _draw_gallbladder(case: _Case) -> None:
    c = case.canvas
    gallbladder = case.ellipsoid((42, 45, -80 + case.breath), (15, 15, 35), (-35, 0, 0), shift_mm=6.0)
    c.draw(gallbladder, "wall", "gallbladder")
    c.draw(gallbladder.shrunk(2.0), "bile", "gallbladder")


def _draw_hollow_tube(case: _Case, tube: list[_Capsule], wall_mm: float, content: str, field: _WaveField) -> None:
    """A bowel segment painted into visceral fat only: wall, then content with gas where ``field`` is high."""
    c = case.canvas
    c.draw(tube, "bowel_wall", over=("fat_visceral",))
    lumen = [_Capsule(p.a, p.b, max(p.ra - wall_mm, 1.0), max(p.rb - wall_mm, 1.0)) for p in tube]
    c.draw(lumen, content, over=("bowel_wall",))
    c.draw(lumen, "air", over=(content,), clip=lambda b: field(b) > GAS_LEVEL)


def _draw_colon(case: _Case) -> None:
    """Colon frame (caecum, ascending, transverse, descending, sigmoid) and rectum, with stool and gas."""
    points = case.jitter(
        [
            (80, 10, -165), (95, -5, -140), (95, 0, -112), (80, 35, -105), (40, 65, -115), (0, 72, -125),
            (-45, 62, -110), (-85, 25, -80), (-98, -5, -100), (-98, -5, -150), (-75, 25, -180), (-30, 20, -190),
            (-15, -15, -195), (0, -30, -215), (0, -32, -250),
        ],
        6.0,
    )  # fmt: skip
    radii = np.array([26, 23, 22, 22, 21, 21, 21, 21, 19, 19, 18, 17, 17, 18, 16], float)
    tube = _tube(points, radii * case.uniform(0.85, 1.15), lobulation=(0.12, 30.0, case.uniform(0, 2 * np.pi)))
    _draw_hollow_tube(case, tube, 3.0, "stool", _WaveField.draw(case.rng, (25.0, 50.0)))


def _draw_duodenum(case: _Case) -> None:
    """Duodenal C-loop around the pancreatic head."""
    points = case.jitter(
        [(12, 40, -55), (35, 25, -58), (50, 5, -72), (50, 0, -95), (35, 0, -108), (5, 5, -112), (-20, 8, -108),
         (-28, 12, -90)],
        4.0,
    )  # fmt: skip
    tube = _tube(points + np.array([0.0, 0.0, 0.5 * case.breath]), [11.0] * len(points))
    _draw_hollow_tube(case, tube, 3.0, "bowel_content", _WaveField.draw(case.rng, (30.0, 60.0)))


def _draw_small_bowel(case: _Case) -> None:
    """Small bowel loops: where two smooth random fields are both near zero (curves), in the remaining fat."""
    c = case.canvas
    f1, f2, gas = (_WaveField.draw(case.rng, BOWEL_WAVELENGTH_MM) for _ in range(3))
    box = c.box(*SMALL_BOWEL_BOX)
    if box is None:
        return
    q = f1(box) ** 2 + f2(box) ** 2
    free = (c.tissue[box.sl] == TISSUE_INDEX["fat_visceral"]) & case.cavity(box)
    wall = free & (q < BOWEL_WALL_LEVEL**2)
    lumen = wall & (q < (BOWEL_LUMEN_FRACTION * BOWEL_WALL_LEVEL) ** 2)
    c.paint(box, wall, "bowel_wall", "background")
    c.paint(box, lumen, "bowel_content", "background")
    c.paint(box, lumen & (gas(box) > GAS_LEVEL), "air", "background")


def _draw_pancreas(case: _Case) -> None:
    """Pancreas: head in the duodenal C-loop, neck and body in front of the aorta, tail to the splenic hilum."""
    b = 0.5 * case.breath
    points = case.jitter(
        [(28, 5, -80 + b), (5, 15, -68 + b), (-30, 12, -58 + b), (-65, -5, -48 + b), (-80, -18, -40 + b)], 6.0
    )
    radii = np.array([19.0, 13.5, 13.5, 11.0, 10.0]) * case.uniform(0.9, 1.1)
    tube = _tube(points, radii, step_mm=4.0, lobulation=(0.15, 18.0, case.uniform(0, 2 * np.pi)))
    case.canvas.draw(tube, "pancreas", "pancreas", clip=case.cavity)


def _draw_bladder(case: _Case) -> None:
    c = case.canvas
    bladder = case.ellipsoid((0, 28, -198), (40, 32, 26), shift_mm=5.0, size=0.2)
    c.draw(bladder, "wall", "urinary_bladder", clip=case.cavity)
    c.draw(bladder.shrunk(3.0), "urine", "urinary_bladder", clip=case.cavity)


def _vessel_tree(
    rng: np.random.Generator, root: Sequence[float], directions: Sequence[Sequence[float]], length: float,
    radius: float, generations: int,
) -> list[_Capsule]:  # fmt: skip
    """Branching vessels from ``root``: each branch forks in two, shorter and thinner, in a perturbed direction."""
    segments = []
    stack = [(np.asarray(root, float), np.asarray(d, float), length, radius, 0) for d in directions]
    while stack:
        start, direction, ln, r, gen = stack.pop(0)
        direction = direction / np.linalg.norm(direction)
        end = start + direction * ln
        segments.append(_Capsule(_f32(start), _f32(end), r, 0.8 * r))
        if gen + 1 < generations:
            for _ in range(2):
                stack.append((end, direction + rng.normal(0.0, 0.6, 3), 0.75 * ln, 0.7 * r, gen + 1))
    return segments


def _draw_abdominal_vessels(case: _Case) -> None:
    """Aorta (labelled) and unlabelled context: iliac and mesenteric arteries, IVC, portal system, renal veins,
    intrahepatic vessels."""
    c = case.canvas
    ys = case.spine_y
    z_desc = np.array([100.0, 40.0, -20.0, -80.0, -130.0, -150.0])
    descending = np.stack([[-24.0, -22.0, -16.0, -12.0, -8.0, -5.0], ys(z_desc) + [22, 22, 25, 28, 28, 26], z_desc], 1)
    aorta = np.vstack([[(2, 15, 55), (10, 22, 92), (2, 18, 124), (-18, 6, 134), (-28, -22, 124)], descending])
    aorta = case.jitter(aorta, 3.0)
    aorta_radii = np.array([15, 16, 14, 13, 12, 12, 11.5, 11, 10.5, 9.5, 9]) * case.uniform(0.9, 1.1)
    bifurcation = aorta[-1]
    for s, _ in SIDES:
        iliac = [
            bifurcation,
            bifurcation + (s * 18, 8, -25),
            bifurcation + (s * 36, 25, -55),
            bifurcation + (s * 52, 45, -90),
        ]
        c.draw(_tube(iliac, (7.0, 7.0, 6.5, 6.0)), "artery")
    c.draw(_tube(aorta, aorta_radii), "artery", "aorta")

    ivc = case.jitter(
        [(18, ys(-150) + 20, -150), (22, ys(-90) + 22, -90), (24, ys(-40) + 25, -40), (20, -15, 0), (14, 0, 25)], 3.0
    )
    c.draw(_tube(ivc, (10.0, 11.0, 11.0, 12.0, 12.0)), "vein")
    for _, side in SIDES:
        z = case.kidney_hilum[side][2]
        cross = (-8.0, ys(z) + 42.0, z) if side == "left" else (30.0, ys(z) + 25.0, z)
        c.draw(_tube([case.kidney_hilum[side], cross, (22.0, ys(z) + 22.0, z)], (5.0, 5.0, 6.0)), "vein")

    b = 0.5 * case.breath
    confluence = (8.0, 8.0, -68.0 + b)
    porta = case.jitter([(35, 12, -42 + case.breath)], 4.0)[0]
    not_liver = _all_tissues_but("liver")
    c.draw(_tube([confluence, porta], (7.5, 7.5)), "vein", over=not_liver)
    c.draw(
        _tube([(-82, -28, -30 + b), (-55, -5, -50 + b), (-25, 2, -60 + b), confluence], (4.5, 5, 5, 5.5)),
        "vein",
        over=not_liver,
    )
    c.draw(_tube([confluence, (12, 25, -100), (15, 35, -140)], (5.5, 5.0, 4.0)), "vein", over=not_liver)
    c.draw(_tube([(-10, ys(-55) + 36, -55), (-6, 22, -80), (-4, 35, -140)], (4.0, 3.5, 3.0)), "artery", over=not_liver)

    portal = _vessel_tree(case.rng, porta, [(1, -0.2, 0.1), (0.3, 0.3, 0.6), (-1, 0.6, 0.3)], 30.0, 5.0, 3)
    hepatic = _vessel_tree(case.rng, ivc[3], [(1, 0.3, -0.4), (0.2, 1, -0.3), (-0.6, 0.8, -0.2)], 30.0, 5.0, 2)
    c.draw(portal, "vein", None, over=("liver",))
    c.draw(hepatic, "vein", None, over=("liver",))


def _draw_heart(case: _Case) -> None:
    """Heart on the diaphragm, left of the midline: pericardial fat, myocardium, blood pools and septum."""
    c = case.canvas
    heart = case.ellipsoid((-18, 22, 52 + 0.5 * case.breath), (62, 48, 50), (0, 25, 35), shift_mm=6.0)
    on_diaphragm = lambda b: case.above_diaphragm(b, 2.0)  # noqa: E731
    c.draw(heart.scaled(1.08), "fat_visceral", clip=on_diaphragm)
    c.draw(heart, "myocardium", clip=on_diaphragm)
    c.draw(heart.shrunk(9.0), "heart_blood", over=("myocardium",))
    septum_normal = heart.rot[:, 0]

    def septum(b: _Box) -> np.ndarray:
        d = (b.x - heart.center[0]) * septum_normal[0] + (b.y - heart.center[1]) * septum_normal[1]
        return np.abs(d + (b.z - heart.center[2]) * septum_normal[2] - 8.0) < 5.0

    c.draw(heart.shrunk(9.0), "myocardium", over=("heart_blood",), clip=septum)


def _draw_thoracic_vessels(case: _Case) -> None:
    """Unlabelled: SVC, arch branches, pulmonary arteries and the vessel trees inside the lungs."""
    c = case.canvas
    c.draw(_tube(case.jitter([(25, 10, 240), (25, 10, 170), (22, 8, 120), (18, 15, 80)], 3.0), (8, 9, 10, 10)), "vein")
    for points, r in (
        ([(6, 15, 133), (12, 18, 170), (22, 12, 245)], 6.5),
        ([(-8, 6, 136), (-14, 10, 245)], 4.5),
        ([(-20, -8, 132), (-32, -5, 180), (-65, 0, 215)], 5.5),
    ):
        c.draw(_tube(points, (r,) * len(points)), "artery")
    trunk = [(-10, 45, 75), (-12, 20, 100)]
    right_pa, left_pa = (40.0, -5.0, 95.0), (-42.0, -10.0, 100.0)
    c.draw(_tube(trunk, (13, 13)), "pulmonary_blood")
    c.draw(_tube([trunk[1], (10, 5, 102), right_pa], (10, 10, 9)), "pulmonary_blood")
    c.draw(_tube([trunk[1], left_pa], (10, 9)), "pulmonary_blood")
    for s, root in ((1.0, right_pa), (-1.0, left_pa)):
        directions = [
            (0.3 * s, 0.0, 1.0), (s, 0.2, 0.0), (0.5 * s, -0.6, -1.0), (0.5 * s, 0.8, -0.3), (0.6 * s, -1.0, 0.2),
            (0.4 * s, 0.6, 0.8),
        ]  # fmt: skip
        tree = _vessel_tree(case.rng, root, directions, 32.0, 4.5, 5)
        c.draw(tree, "pulmonary_blood", None, over=("lung",))


def _draw_airways(case: _Case) -> None:
    """Trachea (labelled, lumen and wall) down to the carina, main bronchi and the oesophagus (unlabelled)."""
    c = case.canvas
    carina = (2.0, -15.0, 118.0 + case.uniform(-6.0, 6.0))
    trachea = _tube([(0, 18, 260), (0, 8, 200), (0, -5, 150), carina], [10.0 * case.uniform(0.9, 1.1)] * 4)
    c.draw(trachea, "wall", "trachea")
    c.draw([_Capsule(p.a, p.b, p.ra - 2.0, p.rb - 2.0) for p in trachea], "air", "trachea")
    for s, _ in SIDES:
        bronchus = _tube(
            [carina, np.add(carina, (s * 23, -3, -10)), np.add(carina, (s * 45, -6, -24))], (7.0, 6.5, 6.0)
        )
        c.draw(bronchus, "wall", over=_all_tissues_but("air"))
        c.draw([_Capsule(p.a, p.b, p.ra - 2.0, p.rb - 2.0) for p in bronchus], "air", over=("wall",))
    ys = case.spine_y
    z = np.array([250.0, 200.0, 150.0, 100.0, 40.0])
    oesophagus = np.vstack(
        [np.stack([[-3, -4, -6, -10, -14], ys(z) + [10, 16, 20, 24, 26], z], 1), [(-30, 5, -5 + case.breath)]]
    )
    c.draw(_tube(oesophagus, (7.0,) * len(oesophagus)), "wall")


def _vertebra_levels() -> list[tuple[str, float]]:
    """Name and z centre of every vertebra in the field of view, C5 to L5."""
    levels = [(f"L{n}", Z_L1 - LUMBAR_PITCH_MM * (n - 1)) for n in range(1, 6)]
    t12 = Z_L1 + THORACOLUMBAR_GAP_MM
    levels += [(f"T{n}", t12 + THORACIC_PITCH_MM * (12 - n)) for n in range(1, 13)]
    t1 = t12 + THORACIC_PITCH_MM * 11
    levels += [(f"C{n}", t1 + CERVICAL_PITCH_MM * (8 - n)) for n in (5, 6, 7)]
    return sorted(levels, key=lambda v: v[1])


def _vertebral_body_radii(name: str) -> tuple[float, float]:
    region, n = name[0], int(name[1:])
    if region == "L":
        return 20.0 + n * 0.8, 16.0 + n * 0.4
    if region == "T":
        return 13.0 + 0.55 * n, 11.0 + 0.45 * n
    return 11.0, 8.5


def _draw_spine(case: _Case) -> None:
    """Vertebrae (bodies with cortex and marrow, pedicles, laminae, spinous and transverse processes), discs and
    the spinal canal; L1 is labelled."""
    c = case.canvas
    levels = _vertebra_levels()
    z = np.array([lv[1] for lv in levels])
    radii = np.array([_vertebral_body_radii(lv[0]) for lv in levels])
    ys = case.spine_y(z)
    ones = np.ones_like(z)
    canal_y = ys - radii[:, 1] - SPINAL_CANAL_MM - 1.5
    c.draw(_Column(z, 0 * z, ys, radii[:, 0] - 1.0, radii[:, 1] - 1.0), "disc")
    c.draw(_Column(z, 0 * z, canal_y, SPINAL_CANAL_MM * ones, SPINAL_CANAL_MM * ones), "csf")
    for (name, zc), (rx, ry), yb, yc in zip(levels, radii, ys, canal_y):
        label = "vertebra_L1" if name == "L1" else "background"
        half = VERTEBRA_HEIGHT_MM[name[0]] / 2
        body = _Column((zc - half, zc + half), (0, 0), (yb, yb), (rx, rx), (ry, ry))
        marrow = _Column(
            (zc - half + CORTEX_MM, zc + half - CORTEX_MM),
            (0, 0),
            (yb, yb),
            (rx - CORTEX_MM,) * 2,
            (ry - CORTEX_MM,) * 2,
        )
        arch_r = SPINAL_CANAL_MM + 2.5
        spinous_len, spinous_drop = (28.0, 4.0) if name[0] == "L" else (32.0, 18.0)
        transverse_len = rx + (18.0 if name[0] == "L" else 12.0)
        parts: list[_Shape] = [body]
        for zp in (zc - 0.25 * half, zc + 0.25 * half):  # two rows of capsules: posterior elements taller than thick
            for s, _ in SIDES:
                parts += _tube([(s * rx * 0.55, yb - ry * 0.6, zp), (s * arch_r, yc, zp)], (4.5, 4.5))
                parts += _tube([(s * arch_r, yc, zp), (0, yc - arch_r, zp)], (4.0, 4.0))
                parts += _tube([(s * arch_r, yc, zp), (s * transverse_len, yc - 6.0, zp)], (4.5, 4.0))
            parts += _tube([(0, yc - arch_r, zp), (0, yc - arch_r - spinous_len, zp - spinous_drop)], (4.5, 4.0))
        c.draw(parts, "bone_cortex", label)
        c.draw(marrow, "bone_marrow", label)


def _draw_ribs(case: _Case) -> None:
    """Twelve rib pairs in the trunk wall, falling anteriorly; costal cartilage joins ribs 1-7 to the sternum."""
    c = case.canvas
    t_levels = {name: z for name, z in _vertebra_levels() if name[0] == "T"}
    first_head = t_levels["T1"] + 4.0
    drop = RIB_DROP_MM + case.uniform(-10.0, 10.0)
    box = c.box((-200.0, -130.0, t_levels["T12"] - drop - 20.0), (200.0, 130.0, first_head + 20.0))
    if box is None:
        return
    inset = case.wall_inset + case.muscle / 2
    a = _f32(np.interp(box.z, Z_BODY, BODY_HALF_WIDTH) - inset)
    b = _f32(np.interp(box.z, Z_BODY, BODY_HALF_DEPTH) - inset)
    xn, yn = box.x / a, box.y / b
    rho = np.sqrt(xn * xn + yn * yn)
    radial = np.sqrt(box.x * box.x + box.y * box.y) * (1.0 - 1.0 / np.maximum(rho, 1e-3))  # mm from the mid wall
    idx = np.nonzero(np.abs(radial) < RIB_HALF_THICKNESS_MM)
    cos_front = np.broadcast_to(yn, rho.shape)[idx] / rho[idx]  # 1 anterior, -1 posterior
    angle = np.arccos(np.clip(cos_front, -1.0, 1.0))  # 0 anterior midline .. pi posterior midline
    z = np.broadcast_to(box.z, rho.shape)[idx]
    t = (first_head - z - drop * (1.0 + cos_front) / 2) / THORACIC_PITCH_MM
    rib = np.rint(t)
    dz = (t - rib) * THORACIC_PITCH_MM
    rib_end = np.interp(rib, (0, 6, 7, 9, 10, 11), (0.5, 0.5, 0.8, 1.0, 1.7, 2.0))  # anterior end of the bone
    in_band = (rib >= 0) & (rib < RIB_COUNT) & (np.abs(dz) < RIB_HALF_HEIGHT_MM) & (angle < np.pi - 0.35)
    bone = in_band & (angle > rib_end)
    cartilage = in_band & (angle <= rib_end) & (rib < TRUE_RIBS) & (angle > 0.12)
    marrow = bone & (np.abs(dz) < RIB_HALF_HEIGHT_MM - 2.0) & (np.abs(radial[idx]) < RIB_HALF_THICKNESS_MM - 2.0)
    for tissue, sel in (("cartilage", cartilage), ("bone_cortex", bone), ("bone_marrow", marrow)):
        mask = np.zeros(box.shape, bool)
        mask[tuple(i[sel] for i in idx)] = True
        c.paint(box, mask, tissue, "background")


def _draw_sternum(case: _Case) -> None:
    """Sternum (manubrium, body, xiphoid) in the anterior chest wall, cortex and marrow."""
    c = case.canvas
    z = np.asarray(STERNUM_Z) + case.uniform(-8.0, 8.0)
    y = np.interp(z, Z_BODY, BODY_HALF_DEPTH) - case.wall_inset - case.muscle / 2
    width = np.asarray(STERNUM_HALF_WIDTH) * case.uniform(0.9, 1.1)
    thick = np.asarray(STERNUM_HALF_THICKNESS)
    c.draw(_Column(z, 0 * z, y, width, thick), "bone_cortex", "sternum")
    inner_z = z[1:] + (CORTEX_MM, 0.0, -CORTEX_MM)  # the thin xiphoid is all cortex
    inner = _Column(inner_z, 0 * inner_z, y[1:], width[1:] - CORTEX_MM, thick[1:] - CORTEX_MM)
    c.draw(inner, "bone_marrow", "sternum")


def _draw_pelvis(case: _Case) -> None:
    """Iliac wings, sacrum, pubic rami and femoral heads (unlabelled)."""
    c = case.canvas
    sacrum = case.ellipsoid((0, case.spine_y(-215.0), -215), (50, 17, 32), (25, 0, 0), shift_mm=3.0, wobble=0.02)
    c.draw(sacrum, "bone_cortex")
    c.draw(sacrum.shrunk(CORTEX_MM), "bone_marrow")
    for s, _ in SIDES:

        def wing(b: _Box, s: float = s, half: float = 4.5) -> np.ndarray:
            a = _f32(np.interp(b.z, (ACETABULUM_Z, ILIAC_CREST_Z), (80.0, 122.0)))
            d = _f32(np.interp(b.z, (ACETABULUM_Z, ILIAC_CREST_Z), (62.0, 80.0)))
            rho = np.sqrt((b.x / a) ** 2 + ((b.y + 15.0) / d) ** 2)
            radial = (rho - 1.0) * np.sqrt(a * d)
            return (
                (np.abs(radial) < half) & (s * b.x > 48.0) & (b.y < 15.0) & (b.z > ACETABULUM_Z) & (b.z < ILIAC_CREST_Z)
            )

        lo, hi = (min(0.0, s * 140.0), -100.0, ACETABULUM_Z), (max(0.0, s * 140.0), 20.0, ILIAC_CREST_Z)
        c.draw(_Region(lo, hi, wing), "bone_cortex")
        c.draw(_Region(lo, hi, lambda b, s=s: wing(b, s, half=2.0)), "bone_marrow", over=("bone_cortex",))
        pubis = _tube([(s * 82, 12, -226), (s * 45, 40, -230), (s * 6, 52, -234)], (11.0, 9.0, 9.0))
        femoral_head = _Ellipsoid(_f32((s * 90, 8, -248)), _f32((23, 23, 23)), np.eye(3, dtype=np.float32))
        for shape in (pubis, femoral_head):
            c.draw(shape, "bone_cortex")
        c.draw(femoral_head.shrunk(CORTEX_MM), "bone_marrow")
        c.draw([_Capsule(p.a, p.b, p.ra - CORTEX_MM, p.rb - CORTEX_MM) for p in pubis], "bone_marrow")


DRAW_ORDER: tuple[Callable[[_Case], None], ...] = (
    _draw_body, _draw_back_muscles, _draw_rectus, _draw_diaphragm, _draw_lungs, _draw_stomach, _draw_liver,
    _draw_spleen, _draw_pancreas, _draw_psoas, _draw_kidneys, _draw_gallbladder, _draw_colon, _draw_duodenum,
    _draw_small_bowel, _draw_bladder, _draw_heart, _draw_abdominal_vessels, _draw_thoracic_vessels, _draw_airways,
    _draw_spine, _draw_ribs, _draw_sternum, _draw_pelvis,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Public API
@dataclass
class Phantom:
    """One synthetic CT: int16 HU image and uint8 label map (stored orientation), their RAS+ affine and spacing."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    spacing: Triple


def _positive_triple(value: Sequence[float], name: str) -> Triple:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three numbers (x, y, z) in mm, got {value!r}") from None
    if len(out) != 3 or not all(np.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{name} must be three positive numbers (x, y, z) in mm, got {value!r}")
    return out  # type: ignore[return-value]


def _geometry(rng: np.random.Generator, shape: tuple[int, int, int], spacing: Triple) -> tuple[np.ndarray, np.ndarray]:
    """The stored affine (voxel -> RAS+ world, axes towards L, P, S, rotated about z, per-case origin) and the
    voxel -> standard patient coordinate map (undoing the body shift and the body scale)."""
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    centre_world = np.array([rng.uniform(-ORIGIN_OFFSET_MM[0], ORIGIN_OFFSET_MM[0]),
                             rng.uniform(-ORIGIN_OFFSET_MM[1], ORIGIN_OFFSET_MM[1]),
                             ORIGIN_Z_MM + rng.uniform(-ORIGIN_OFFSET_MM[2], ORIGIN_OFFSET_MM[2])])  # fmt: skip
    body_shift = rng.uniform(-1.0, 1.0, 3) * BODY_SHIFT_MM
    scale = np.array([rng.uniform(*BODY_SCALE), rng.uniform(*BODY_SCALE), 1.0])
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    linear = rotation @ np.diag([-spacing[0], -spacing[1], spacing[2]])  # voxel axes towards L, P, S
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre_world - linear @ ((np.asarray(shape) - 1) / 2.0)
    affine = affine.astype(np.float32).astype(np.float64)  # exactly what a NIfTI sform stores
    world2pat = np.eye(4)
    world2pat[:3, :3] = np.diag(1.0 / scale)
    world2pat[:3, 3] = -(centre_world + body_shift) / scale
    return affine, world2pat @ affine


def _check_body_fits(case: _Case, fov: Triple) -> None:
    extra = -case.skin_inset
    corners = [
        (sx * (max(BODY_HALF_WIDTH) + extra), y, 0.0, 1.0)
        for sx in (-1, 1)
        for y in (Y_COUCH - extra, max(BODY_HALF_DEPTH) + extra)
    ]
    canvas = case.canvas
    vox = np.array(corners) @ canvas.pat2vox.T
    if vox[:, :2].min() < 0 or np.any(vox[:, :2].max(0) > np.asarray(canvas.shape[:2]) - 1):
        raise ValueError(f"fov_mm {fov} is too small in x/y for the phantom body (up to about 380 x 280 mm)")


def _render(tissue: np.ndarray, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-constant HU, partial-volume blur (more along z), slightly correlated noise, clip, int16."""
    sigma = rng.uniform(*BLUR_SIGMA_VOXELS)
    noise_hu = rng.uniform(*NOISE_HU)
    image = ndimage.gaussian_filter(hu[tissue], (sigma, sigma, sigma + BLUR_SIGMA_Z_EXTRA), truncate=3.0)
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (NOISE_CORRELATION_VOXELS, NOISE_CORRELATION_VOXELS, 0.0), truncate=3.0)
    image += noise * np.float32(noise_hu / max(float(noise.std()), 1e-6))
    return np.rint(np.clip(image, *HU_RANGE)).astype(np.int16)


def generate_phantom(seed: int, spacing: Triple | None = None, fov_mm: Triple = DEFAULT_FOV_MM) -> Phantom:
    """Generate one synthetic contrast-enhanced trunk CT and its label map, deterministically from ``seed``.

    ``spacing`` (x, y, z mm) defaults to a per-case draw (in-plane U(1.4, 1.8), slice 2.0/2.5/3.0 mm); the grid
    covers ``fov_mm`` with ``round(fov / spacing)`` voxels. The anatomy depends on the seed only, not the spacing.
    """
    fov = _positive_triple(fov_mm, "fov_mm")
    geometry_rng, anatomy_rng, image_rng = np.random.default_rng(seed).spawn(3)
    in_plane = round(float(geometry_rng.uniform(*IN_PLANE_SPACING_MM)), 4)
    drawn: Triple = (in_plane, in_plane, float(geometry_rng.choice(SLICE_THICKNESS_MM)))
    spacing = drawn if spacing is None else _positive_triple(spacing, "spacing")
    shape = tuple(max(1, int(round(f / s))) for f, s in zip(fov, spacing))
    affine, vox2pat = _geometry(geometry_rng, shape, spacing)  # type: ignore[arg-type]
    canvas = _Canvas(shape, vox2pat)  # type: ignore[arg-type]
    case = _Case(canvas, anatomy_rng)
    _check_body_fits(case, fov)
    for draw in DRAW_ORDER:
        draw(case)
    return Phantom(_render(canvas.tissue, case.hu, image_rng), canvas.label, affine, spacing)


def default_split(n_cases: int) -> tuple[int, int, int]:
    """(training, validation, test) case counts: 70/10/20 like the paper, validation and test >= 1 from 3 cases."""
    if n_cases < 3:
        return n_cases, 0, 0
    n_val = max(1, round(0.1 * n_cases))
    n_test = max(1, round(0.2 * n_cases))
    return n_cases - n_val - n_test, n_val, n_test


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write via a temporary name and rename, so a file that exists is complete."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    tmp = path.with_name(f".{path.name[: -len('.nii.gz')]}.tmp.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)


def write_phantom_dataset(
    output_dir: str,
    n_cases: int = 20,
    seed: int = 0,
    split: tuple[int, int, int] | None = None,
    spacing: Triple | None = None,
    fov_mm: Triple = DEFAULT_FOV_MM,
) -> str:
    """Write ``n_cases`` phantoms to ``output_dir``/imagesTr and labelsTr (NIfTI, int16 image, uint8 label) and a
    MONAI datalist ``datalist.json`` (keys training/validation/test, relative paths, labels, generator info).

    Case ``i`` uses seed ``seed * 100003 + i``. ``split`` = (training, validation, test) counts in case order,
    by default 70/10/20. The datalist is written last: its presence means the dataset is complete.
    Returns the datalist path.
    """
    if isinstance(n_cases, bool) or int(n_cases) != n_cases or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    n_cases = int(n_cases)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    split = default_split(n_cases) if split is None else tuple(split)  # type: ignore[assignment]
    if len(split) != 3 or any(int(n) != n or n < 0 for n in split) or sum(split) != n_cases:
        raise ValueError(f"split must be three non-negative counts summing to n_cases={n_cases}, got {split!r}")
    spacing = None if spacing is None else _positive_triple(spacing, "spacing")
    fov = _positive_triple(fov_mm, "fov_mm")

    out = Path(output_dir)
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    entries, spacings = [], []
    for i in range(n_cases):
        start = time.perf_counter()
        case_seed = int(seed) * 100003 + i
        phantom = generate_phantom(case_seed, spacing, fov)
        name = f"phantom_{i:03d}.nii.gz"
        _save_nifti(phantom.image, phantom.affine, out / "imagesTr" / name)
        _save_nifti(phantom.label, phantom.affine, out / "labelsTr" / name)
        entries.append({"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"})
        spacings.append(list(phantom.spacing))
        logger.info(
            "phantom %d/%d (seed %d, spacing %s) in %.1f s",
            i + 1, n_cases, case_seed, phantom.spacing, time.perf_counter() - start,
        )  # fmt: skip

    n_train, n_val, _ = (int(n) for n in split)
    datalist = {
        "description": "Synthetic contrast-enhanced trunk CT phantoms (autolr_monai.data.phantom); adrenal glands "
        "and thyroid are not drawn.",
        "labels": {str(v): n for v, n in sorted(LABEL_NAMES.items())},
        "generator": {
            "module": "autolr_monai.data.phantom",
            "seed": int(seed),
            "n_cases": n_cases,
            "case_seeds": [int(seed) * 100003 + i for i in range(n_cases)],
            "spacing": None if spacing is None else list(spacing),
            "case_spacings": spacings,
            "fov_mm": list(fov),
            "drawn_structures": list(DRAWN_STRUCTURES),
        },
        "training": entries[:n_train],
        "validation": entries[n_train : n_train + n_val],
        "test": entries[n_train + n_val :],
    }
    path = out / "datalist.json"
    tmp = out / ".datalist.json.tmp"
    tmp.write_text(json.dumps(datalist, indent=2))
    os.replace(tmp, path)
    return str(path)


def ensure_phantom_dataset(dataset_dir: str, **kwargs) -> str:
    """The datalist of the phantom dataset in ``dataset_dir``, generating it first (``write_phantom_dataset``
    arguments in ``kwargs``) when the folder is missing or empty. A non-empty folder without ``datalist.json``
    (someone's files, or an interrupted generation) raises ``FileExistsError`` instead of being overwritten."""
    folder = Path(dataset_dir)
    datalist = folder / "datalist.json"
    if datalist.is_file():
        return str(datalist)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"{folder} exists and is not empty but has no datalist.json: not a complete phantom dataset. Delete or "
            "empty it to generate the phantoms there, or point to another folder"
        )
    start = time.perf_counter()
    path = write_phantom_dataset(str(folder), **kwargs)
    info = json.loads(Path(path).read_text())["generator"]
    logger.info(
        "generated %d synthetic phantom CT cases in %s (seed %d, spacing %s) in %.1f s",
        info["n_cases"], folder, info["seed"], info["spacing"] or "drawn per case", time.perf_counter() - start,
    )  # fmt: skip
    return path

