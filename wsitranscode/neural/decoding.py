"""The entry point `wsitranscode.dicom.decode` uses for frames in a neural transfer syntax.

The container is checked against the DICOM header before torch is even imported: a frame that
claims another size than Rows x Columns is refused (it could otherwise make the decoder allocate
an arbitrarily large image).
"""

from __future__ import annotations

import numpy as np

from wsitranscode.errors import DecodeError
from wsitranscode.neural import bitstream


def decode_neural_frame(data: bytes, rows: int, columns: int, samples_per_pixel: int) -> np.ndarray:
    frame = bitstream.unpack(data)
    if samples_per_pixel != 3:
        raise DecodeError(f"neural frames are RGB; the header says {samples_per_pixel} samples")
    if (frame.height, frame.width) != (rows, columns):
        raise DecodeError(
            f"neural frame holds a {frame.width}x{frame.height} tile, the header describes "
            f"{columns}x{rows} frames (refused before decoding)"
        )
    if max(frame.pad_rows, frame.pad_cols) >= 64:
        raise DecodeError(
            f"neural frame declares implausible padding {frame.pad_cols}x{frame.pad_rows}"
        )
    from wsitranscode.neural.engine import decode_frames

    return decode_frames([data])[0]
