"""wsitranscode: re-encode DICOM whole-slide images and prove what was kept."""

__version__ = "0.1.0"
