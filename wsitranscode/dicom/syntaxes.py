"""Transfer syntaxes the tool reads or writes, and teaching pydicom the ones it does not know.

pydicom 3.0.2 knows HTJ2K but has no decoder for it here (its only plugin needs pylibjpeg), and
knows neither the JPEG XL syntaxes (Supplement 232) nor our private ones. `register_with_pydicom`
adds them and imagecodecs-backed decoder plugins (see `wsitranscode.dicom.pydicom_plugin`) so
that `ds.pixel_array` and `pydicom.pixels.iter_pixels` work on every file we write.

Private transfer syntaxes live under the project root `PROJECT_ROOT` (a 2.25 UUID-derived root,
see docs/design.md, "Private transfer syntaxes"): `.1.x` image codecs without a DICOM syntax
(`.1.1` WebP), `.2.x` neural codecs (`.2.1` factorized, `.2.2` hyperprior, `.2.3` stain-aware).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"
JPEG_XL_JPEG_RECOMPRESSION = "1.2.840.10008.1.2.4.111"
JPEG_XL = "1.2.840.10008.1.2.4.112"

# 2.25.<the decimal value of UUID 1dad204e-df90-4400-acee-a0f7872c0262>, generated once for this
# project (ITU-T X.667 / PS3.5 B.2): globally unique without registering anything.
PROJECT_ROOT = "2.25.39446534520382642101584445488178659938"
PRIVATE_IMAGE_CODECS_ROOT = PROJECT_ROOT + ".1"
PRIVATE_NEURAL_CODECS_ROOT = PROJECT_ROOT + ".2"
PRIVATE_WEBP = PRIVATE_IMAGE_CODECS_ROOT + ".1"
# Neural codecs, one syntax per architecture family; every frame is a self-describing container
# naming its model and weights hash (wsitranscode.neural.bitstream, docs/neural.md).
PRIVATE_NEURAL_FACTORIZED = PRIVATE_NEURAL_CODECS_ROOT + ".1"  # bmshj2018-factorized
PRIVATE_NEURAL_HYPERPRIOR = PRIVATE_NEURAL_CODECS_ROOT + ".2"  # bmshj2018-hyperprior
PRIVATE_NEURAL_STAIN_AWARE = PRIVATE_NEURAL_CODECS_ROOT + ".3"  # factorized, stain-aware encoder


@dataclass(frozen=True)
class Syntax:
    uid: str
    name: str
    keyword: str
    encapsulated: bool
    lossy: bool  # True when this syntax may carry lossy frames (e.g. .91, .203, .112)
    private: bool = False


_SYNTAXES = (
    Syntax(IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", "ImplicitVRLittleEndian",
           False, False),
    Syntax(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", "ExplicitVRLittleEndian",
           False, False),
    Syntax(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "Deflated Explicit VR Little Endian",
           "DeflatedExplicitVRLittleEndian", False, False),
    Syntax(RLE_LOSSLESS, "RLE Lossless", "RLELossless", True, False),
    Syntax(JPEG_BASELINE, "JPEG Baseline", "JPEGBaseline8Bit", True, True),
    Syntax(JPEG_EXTENDED, "JPEG Extended", "JPEGExtended12Bit", True, True),
    Syntax(JPEG_LOSSLESS, "JPEG Lossless", "JPEGLossless", True, False),
    Syntax(JPEG_LOSSLESS_SV1, "JPEG Lossless SV1", "JPEGLosslessSV1", True, False),
    Syntax(JPEG_LS_LOSSLESS, "JPEG-LS Lossless", "JPEGLSLossless", True, False),
    Syntax(JPEG_LS_NEAR_LOSSLESS, "JPEG-LS Near-Lossless", "JPEGLSNearLossless", True, True),
    Syntax(JPEG_2000_LOSSLESS, "JPEG 2000 Lossless", "JPEG2000Lossless", True, False),
    Syntax(JPEG_2000, "JPEG 2000", "JPEG2000", True, True),
    Syntax(HTJ2K_LOSSLESS, "HTJ2K Lossless", "HTJ2KLossless", True, False),
    Syntax(HTJ2K_LOSSLESS_RPCL, "HTJ2K Lossless RPCL", "HTJ2KLosslessRPCL", True, False),
    Syntax(HTJ2K, "HTJ2K", "HTJ2K", True, True),
    Syntax(JPEG_XL_LOSSLESS, "JPEG XL Lossless", "JPEGXLLossless", True, False),
    # Lossless with respect to the JPEG it recompresses: the JPEG bytes come back exactly.
    Syntax(JPEG_XL_JPEG_RECOMPRESSION, "JPEG XL JPEG Recompression", "JPEGXLJPEGRecompression",
           True, False),
    Syntax(JPEG_XL, "JPEG XL", "JPEGXL", True, True),
    # May be lossless or lossy; treated as lossy unless the header says otherwise.
    Syntax(PRIVATE_WEBP, "WebP (wsitranscode private)", "WsiTranscodeWebP", True, True, True),
    Syntax(PRIVATE_NEURAL_FACTORIZED, "Neural bmshj2018-factorized (wsitranscode private)",
           "WsiTranscodeNeuralFactorized", True, True, True),
    Syntax(PRIVATE_NEURAL_HYPERPRIOR, "Neural bmshj2018-hyperprior (wsitranscode private)",
           "WsiTranscodeNeuralHyperprior", True, True, True),
    Syntax(PRIVATE_NEURAL_STAIN_AWARE, "Neural stain-aware factorized (wsitranscode private)",
           "WsiTranscodeNeuralStainAware", True, True, True),
)  # fmt: skip

SYNTAXES: dict[str, Syntax] = {s.uid: s for s in _SYNTAXES}

NATIVE_SYNTAXES = frozenset(s.uid for s in _SYNTAXES if not s.encapsulated)
JPEG_2000_FAMILY = frozenset(
    {JPEG_2000_LOSSLESS, JPEG_2000, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K}
)
JPEG_XL_FAMILY = frozenset({JPEG_XL_LOSSLESS, JPEG_XL_JPEG_RECOMPRESSION, JPEG_XL})
PRIVATE_SYNTAXES = frozenset(s.uid for s in _SYNTAXES if s.private)
NEURAL_SYNTAXES = frozenset(
    {PRIVATE_NEURAL_FACTORIZED, PRIVATE_NEURAL_HYPERPRIOR, PRIVATE_NEURAL_STAIN_AWARE}
)


def name_of(uid: str) -> str:
    """Human-readable name of a transfer syntax, or the UID itself when unknown."""
    syntax = SYNTAXES.get(str(uid))
    if syntax is not None:
        return syntax.name
    import pydicom.uid

    name = pydicom.uid.UID(str(uid)).name
    return name if name != str(uid) else f"unknown transfer syntax {uid}"


def is_known(uid: str) -> bool:
    return str(uid) in SYNTAXES


def is_encapsulated(uid: str) -> bool:
    """True when frames are encapsulated (compressed) items, False for native pixel data."""
    syntax = SYNTAXES.get(str(uid))
    if syntax is not None:
        return syntax.encapsulated
    # Every standard syntax except the four native ones is encapsulated.
    return str(uid) not in NATIVE_SYNTAXES | {"1.2.840.10008.1.2.2"}


def is_lossy(uid: str) -> bool:
    """True when the syntax can carry lossy frames (the header's LossyImageCompression decides)."""
    syntax = SYNTAXES.get(str(uid))
    return syntax.lossy if syntax is not None else True


def is_private(uid: str) -> bool:
    return str(uid) in PRIVATE_SYNTAXES or not str(uid).startswith("1.2.840.10008.")


_REGISTER_LOCK = threading.Lock()
_registered = False


def register_with_pydicom() -> None:
    """Teach pydicom our extra transfer syntaxes and their decoders. Safe to call many times."""
    global _registered
    if _registered:
        return
    with _REGISTER_LOCK:
        if _registered:
            return
        _register_uids()
        _register_decoders()
        _registered = True


class _RegisteredPrivateEncoding:
    """Class-level fallback for `UID._PRIVATE_TS_ENCODING` (a non-data descriptor).

    pydicom 3.0.2 only knows a private syntax's encoding on the UID object that was registered;
    the UID it reads from a file's meta information is a fresh object without it, so
    `iter_pixels` and `is_encapsulated` fail on it. This answers for our registered private UIDs
    only; every other UID still has no such attribute, and an encoding set on an instance (by
    `set_private_encoding`) still wins because instance attributes shadow non-data descriptors.
    """

    def __get__(self, obj: object, objtype: type | None = None) -> tuple[bool, bool]:
        if obj is not None and str.__str__(obj) in PRIVATE_SYNTAXES:  # type: ignore[arg-type]
            return (False, True)  # explicit VR, little endian
        raise AttributeError("_PRIVATE_TS_ENCODING")


def _register_uids() -> None:
    import pydicom.uid
    from pydicom._uid_dict import UID_dictionary

    if "_PRIVATE_TS_ENCODING" not in vars(pydicom.uid.UID):
        pydicom.uid.UID._PRIVATE_TS_ENCODING = _RegisteredPrivateEncoding()  # type: ignore[assignment]
    for syntax in _SYNTAXES:
        if syntax.private:
            uid = pydicom.uid.register_transfer_syntax(
                syntax.uid, implicit_vr=False, little_endian=True
            )
        elif syntax.uid not in UID_dictionary:
            # A standard UID: its Transfer Syntax type in the dictionary is what makes pydicom
            # treat it as an explicit VR little endian, encapsulated syntax.
            UID_dictionary[syntax.uid] = (syntax.name, "Transfer Syntax", "", "", syntax.keyword)
            uid = pydicom.uid.UID(syntax.uid)
        else:
            continue
        if uid not in pydicom.uid.AllTransferSyntaxes:
            pydicom.uid.AllTransferSyntaxes.append(uid)


def _register_decoders() -> None:
    import pydicom.uid
    from pydicom.pixels.decoders import base

    plugin = ("wsitranscode.dicom.pydicom_plugin", "decode_frame_for_pydicom")
    for uid_text in sorted(JPEG_XL_FAMILY | PRIVATE_SYNTAXES | JPEG_2000_FAMILY):
        uid = next(
            (u for u in pydicom.uid.PrivateTransferSyntaxes if u == uid_text),
            pydicom.uid.UID(uid_text),
        )
        entry = base._PIXEL_DATA_DECODERS.get(uid)
        if entry is None:
            decoder = base.Decoder(uid)
            base._PIXEL_DATA_DECODERS[uid] = (decoder, "wsitranscode")
        else:
            decoder = entry[0]
        if "wsitranscode" not in decoder._available and "wsitranscode" not in decoder._unavailable:
            decoder.add_plugin("wsitranscode", plugin)
