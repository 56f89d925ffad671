"""Writing the outputs of inference so that a run which could not write all of them never passes for complete.

Each NIfTI output is written to a hidden temporary file next to its target, flushed to disk, read back and only
then renamed into place (``SaveNiftid``); the DICOM SEG writer writes to a temporary file and renames it too
(``write_dicom_seg``). A write that fails (a full disk, a folder gone read-only) fails its scan only
(``ScanOutputs``): the evaluator goes on with the next scan, and at the end of the run ``WriteFailures`` raises one
line naming every scan that failed. Before the first scan, ``ScanOutputs.check_outputs`` checks that the output
folders can be written and that no output would overwrite an input or a file that inference did not write.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import Compose, MapTransform
from monai.utils import get_equivalent_dtype
from nibabel.filebasedimages import ImageFileError

from autolr_monai import __version__
from autolr_monai.data.checks import check_nifti_complete
from autolr_monai.files import replaced_atomically

from .dicom_seg import SaveDicomSegd
from .inputs import written_by_autolr
from .marks import NIFTI_MARK
from .outputs import OutputWriteError, ScanFolderLayout, cannot_write

logger = logging.getLogger("autolr_monai.inference")



def _source(data: Mapping[Hashable, torch.Tensor], image_key: str) -> str:
    """The scan ``data`` was loaded from: its image's ``meta["filename_or_obj"]``."""
    source = getattr(data[image_key], "meta", {}).get("filename_or_obj")
    if source is None:
        raise ValueError(f"{image_key!r} has no meta['filename_or_obj']: writing outputs needs the MetaTensor that "
                         "the loader made, to name them after the scan")  # fmt: skip
    return str(source)


def _check_reads_back(written: Path, target: Path, spatial_shape: tuple[int, ...]) -> None:
    """Raise ``OutputWriteError`` naming ``target`` unless ``written`` reads back as a NIfTI of ``spatial_shape``
    holding every byte of data its header announces (``check_nifti_complete``, the check of the inputs)."""
    try:
        shape = nib.load(written).shape
        check_nifti_complete(written)
    except (OSError, EOFError, ValueError, ImageFileError) as e:
        raise OutputWriteError(f"{target}: cannot write (the file written does not read back: {e})") from e
    if tuple(shape[: len(spatial_shape)]) != spatial_shape:
        raise OutputWriteError(f"{target}: cannot write (the file written reads back with shape {shape}, expected "
                               f"{spatial_shape})")  # fmt: skip


class SaveNiftid(MapTransform):
    """Write each key's image (channel first, on its scan's grid) as NIfTI to ``folder_layout``'s file for the
    scan, completely or not at all.

    Instead of MONAI's ``SaveImaged``: its ``SaveImage`` catches any error of a writer, a full disk included, logs
    "unable to write" and tries the next writer registered for the extension (ITK after nibabel for ``.nii.gz``),
    which can leave a truncated file and report success; when every writer fails it raises a ``RuntimeError``
    without the ``OSError`` and its errno. Here MONAI's ``NibabelWriter`` writes as ``SaveImage`` would (channel
    first, end dimensions of size 1 squeezed, no resampling) to a hidden temporary file next to the target, which
    is flushed to disk, read back (``_check_reads_back``) and only then renamed over the target (``os.replace``,
    atomic: a reader sees the earlier file or the new one). On failure the temporary file is removed and
    ``OutputWriteError`` names the target and the errno. The header's ``descrip`` marks the file as inference's,
    "autolr-monai <version> <postfix>" (``written_by_autolr``). Returns the data unchanged.

    Args:
        keys: the images to write, one file each: ``folder_layout`` names files after the scan, so use one key per
            transform.
        folder_layout: the output file of each scan, ``data[image_key].meta["filename_or_obj"]``.
        output_dtype: the data type of the file.
        image_key: the loaded scan.
    """

    def __init__(self, keys: KeysCollection, folder_layout: ScanFolderLayout, output_dtype: DtypeLike = np.float32,
                 image_key: str = "image", allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, allow_missing_keys)
        self.layout, self.output_dtype, self.image_key = folder_layout, output_dtype, image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        source = _source(d, self.image_key)
        for key in self.key_iterator(d):
            if not isinstance(d[key], MetaTensor):
                raise ValueError(f"{key!r} for {source}: expected a MetaTensor (its affine places the image), got "
                                 f"{type(d[key]).__name__}")  # fmt: skip
            self.write(d[key], source)
        return d

    def write(self, image: MetaTensor, source: str) -> Path:
        """Write ``image`` as the output of scan ``source``; return the file."""
        target = self.layout.path(source)
        try:
            with replaced_atomically(target, suffix=self.layout.extension) as partial:
                header = nib.Nifti1Header()
                header.set_data_dtype(get_equivalent_dtype(self.output_dtype, np.ndarray))
                header["descrip"] = f"{NIFTI_MARK} {__version__} {self.layout.postfix}"
                writer = NibabelWriter(output_dtype=self.output_dtype)
                writer.set_data_array(image, channel_dim=0, squeeze_end_dims=True)
                writer.set_metadata(image.meta, resample=False)
                writer.write(partial, header=header)
                _check_reads_back(partial, target, tuple(image.shape[1:]))
        except OSError as e:
            raise e if isinstance(e, OutputWriteError) else cannot_write(target, e) from e
        return target


class WriteFailures:
    """The scans of an inference run whose outputs could not all be written, and the Ignite handler that fails the
    run for them: attached to the evaluator (its ``val_handlers``), it raises ``OutputWriteError`` at
    ``Events.COMPLETED`` with one line naming them, so that such a run never exits 0. ``ScanOutputs`` records each
    scan here; the record starts afresh at ``Events.STARTED``."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self.scans = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine | None = None) -> None:
        self.failed.clear()
        self.scans = 0

    def record(self, scan: str, failure: str | None = None) -> None:
        """Count ``scan``, written completely or, with ``failure`` (why not, logged at once), not."""
        self.scans += 1
        if failure is not None:
            self.failed[scan] = failure
            logger.error("%s: %s; its remaining outputs are not written, going on with the next scan", scan, failure)

    def completed(self, engine: Engine | None = None) -> None:
        """Raise ``OutputWriteError`` naming the scans that failed (the first 5), if any."""
        if self.failed:
            listed = "; ".join(f"{scan} ({why})" for scan, why in list(self.failed.items())[:5])
            more = f"; and {len(self.failed) - 5} more (see the log)" if len(self.failed) > 5 else ""
            raise OutputWriteError(f"{len(self.failed)} of {self.scans} scans could not be written completely: "
                                   f"{listed}{more}")  # fmt: skip


def _os_error(error: BaseException | None) -> OSError | None:
    """The ``OSError`` that ``error`` is or was raised from (``Compose`` raises a ``RuntimeError`` from it)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__
    return error


def _layout(transform: Callable) -> ScanFolderLayout | None:
    """The output files of ``SaveNiftid`` and ``SaveDicomSegd``."""
    return transform.layout if isinstance(transform, (SaveNiftid, SaveDicomSegd)) else None


def check_output_dir(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``folder`` unless it is a folder that files can be written into, or can be
    created: found before the first scan rather than when its first output is written. Creates nothing: a probe
    folder is made and removed in ``folder``, or in its nearest existing parent when it is still to be created."""
    path = Path(folder).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {path} is a file, not a folder: pass --output_dir with a folder (one that does "
                         "not exist yet is created)")  # fmt: skip
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output_dir {path} cannot be created: {existing} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".autolr-write-check-", dir=existing))
    except OSError as e:
        where = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise ValueError(f"output_dir {path} {where} ({e.strerror}, errno {e.errno})") from None


class ScanOutputs(Compose):
    """``Compose`` for the post-processing of one scan, up to its output files, that fails only that scan when one
    of them cannot be written.

    An ``OSError`` from one of ``transforms`` (``SaveNiftid``, ``SaveDicomSegd`` or any other writer: a full disk,
    a folder gone read-only) ends the scan's post-processing, its remaining transforms not run, and is recorded in
    ``failures`` with the scan and the file; the evaluator goes on with the next scan, and ``failures`` (attached to
    it) fails the run at its end. Without ``failures``, and for any other error, errors propagate as in
    ``Compose``.

    Args:
        transforms: as for ``Compose``; they run on one scan's data dict.
        failures: the record of write failures, shared with the evaluator's handlers.
        image_key: the loaded scan, whose ``meta["filename_or_obj"]`` names it.
        kwargs: further arguments of ``Compose``.
    """

    def __init__(self, transforms: Sequence[Callable] | Callable | None = None, failures: WriteFailures | None = None,
                 image_key: str = "image", **kwargs) -> None:  # fmt: skip
        super().__init__(transforms, **kwargs)
        self.failures, self.image_key = failures, image_key

    def __call__(self, input_: Mapping[Hashable, torch.Tensor], start: int = 0, end: int | None = None,
                 threading: bool = False, lazy: bool | None = None) -> Mapping[Hashable, torch.Tensor]:  # fmt: skip
        if self.failures is None:
            return super().__call__(input_, start, end, threading, lazy)
        scan, data = _source(input_, self.image_key), input_
        for index in range(start, len(self.transforms) if end is None else end):
            try:
                data = super().__call__(data, index, index + 1, threading, lazy)
            except Exception as e:
                error = _os_error(e)
                if error is None:
                    raise
                if not isinstance(error, OutputWriteError):
                    layout = _layout(self.transforms[index])
                    error = cannot_write(layout.path(scan) if layout else error.filename or "an output", error)
                self.failures.record(scan, str(error))
                return data
        self.failures.record(scan)
        return data

    def outputs(self, scan: str) -> list[tuple[ScanFolderLayout, Path]]:
        """The files the transforms write for ``scan`` (a DICOM SEG for series folders only), with their layouts."""
        return [(layout, layout.path(scan)) for t in self.transforms if (layout := _layout(t)) is not None
                and (os.path.isdir(scan) or not isinstance(t, SaveDicomSegd))]  # fmt: skip

    def check_outputs(self, scans: Sequence[Mapping[str, str]], key: str = "image") -> None:
        """Check before the first scan what the transforms will write for ``scans``: raise ``ValueError`` when an
        output folder cannot be written (``check_output_dir``), naming the scan and the file when an output would
        overwrite a file that inference did not write (``written_by_autolr``: a user's label map of that name), or
        naming both files when an output would overwrite an input scan, be written into an input DICOM series
        folder or be written twice; log a warning naming the outputs of an earlier run that will be replaced."""
        for folder in dict.fromkeys(layout.output_dir for t in self.transforms if (layout := _layout(t)) is not None):
            check_output_dir(folder)
        inputs = {os.path.realpath(s[key]): s[key] for s in scans}
        series = [(real + os.sep, scan) for real, scan in inputs.items() if os.path.isdir(real)]
        written: dict[str, str] = {}
        replaced: dict[Path, list[str]] = {}
        for scan in (s[key] for s in scans):
            for layout, target in self.outputs(scan):
                real = os.path.realpath(target)
                if os.path.lexists(target) and not written_by_autolr(target):
                    raise ValueError(f"{scan}: its output would overwrite {target}, which autolr-monai did not write "
                                     "(your own label map?): pass an --output_dir elsewhere")  # fmt: skip
                if real in inputs:
                    raise ValueError(f"{target} would overwrite the input scan {inputs[real]}: pass an --output_dir "
                                     "outside the input folder")  # fmt: skip
                folder = next((s for prefix, s in series if real.startswith(prefix)), None)
                if folder is not None:
                    raise ValueError(f"{target} would be written into the input DICOM series folder {folder}: pass "
                                     "an --output_dir outside it")  # fmt: skip
                if real in written:
                    raise ValueError(f"{target} would be written twice, for {written[real]} and {scan}: give each "
                                     "output a postfix of its own")  # fmt: skip
                written[real] = scan
                if target.exists():
                    replaced.setdefault(layout.output_dir, []).append(str(target.relative_to(layout.output_dir)))
        for folder, names in replaced.items():
            logger.warning("%s: replacing %d files of an earlier run: %s", folder, len(names),
                           ", ".join(sorted(names)[:10]) + (" ..." if len(names) > 10 else ""))  # fmt: skip
