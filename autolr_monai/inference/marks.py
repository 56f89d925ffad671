"""How inference marks the files it writes (the NIfTI header's ``descrip``, the DICOM SEG's Manufacturer and
SeriesDescription), so that it never takes a user's file of the same name for an output of its own."""

#: How the ``descrip`` field of each NIfTI header inference writes begins (``SaveNiftid``: "autolr-monai <version>
#: <postfix>").
NIFTI_MARK = "autolr-monai"
MANUFACTURER = "autolr-monai"
ALGORITHM_NAME = "autolr-monai DualPathResNet3D"
SERIES_DESCRIPTION = "autolr-monai segmentation"
