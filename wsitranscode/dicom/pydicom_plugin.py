"""A pydicom 3 pixel decoder plugin backed by `wsitranscode.dicom.decode` (imagecodecs).

Registered by `wsitranscode.dicom.syntaxes.register_with_pydicom()` for JPEG XL, HTJ2K, JPEG 2000
and our private syntaxes. The plugin protocol (pydicom.pixels.decoders.base.Decoder.add_plugin):
a module with `is_available(uid)`, `DECODER_DEPENDENCIES` and a decode function
`(src: bytes, runner: DecodeRunner) -> bytes | bytearray`.
"""

from __future__ import annotations

from typing import Any

from wsitranscode.dicom import syntaxes as ts

_DECODABLE = ts.JPEG_XL_FAMILY | ts.JPEG_2000_FAMILY | ts.PRIVATE_SYNTAXES

DECODER_DEPENDENCIES = {uid: ("numpy", "imagecodecs") for uid in _DECODABLE}


def is_available(uid: str) -> bool:
    if str(uid) not in _DECODABLE:
        return False
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def decode_frame_for_pydicom(src: bytes, runner: Any) -> bytes:
    """Decode one frame for pydicom; colour frames come back RGB, interleaved."""
    from wsitranscode.dicom.decode import PixelInfo, decode_frame

    info = PixelInfo(
        transfer_syntax_uid=str(runner.transfer_syntax),
        rows=runner.rows,
        columns=runner.columns,
        samples_per_pixel=runner.samples_per_pixel,
        photometric=str(runner.photometric_interpretation),
        bits_allocated=runner.bits_allocated,
        bits_stored=runner.bits_stored,
        pixel_representation=runner.pixel_representation,
        planar_configuration=0,
    )
    arr = decode_frame(src, info)
    if info.samples_per_pixel == 3:
        runner.set_option("photometric_interpretation", "RGB")
        runner.set_option("planar_configuration", 0)
    return arr.tobytes()
