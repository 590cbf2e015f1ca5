"""Training data: slides (DICOM WSI series, image files) and seeded tissue tiles from them.

Tiles come from the highest magnification (level 0), at seeded random positions with at least 30%
tissue (the tissue mask of `wsitranscode.quality.sampling`, computed on a low-resolution view),
not overlapping: the paper's protocol. The validation split is by slide, so no validation tile
shares a slide with a training tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsitranscode.errors import InvalidInputError, UsageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs", ".webp"})
_THUMBNAIL_SIDE = 1024


class Slide:
    """One slide's level 0: size, a low-resolution view, and regions at full resolution."""

    name: str
    width: int
    height: int

    def thumbnail(self) -> np.ndarray:
        raise NotImplementedError

    def region(self, x: int, y: int, size: int) -> np.ndarray:
        raise NotImplementedError


class ImageSlide(Slide):
    """A PNG/JPEG/TIFF/SVS image file (SVS and TIFF: page 0), held in memory."""

    def __init__(self, path: Path):
        from wsitranscode.synth import load_tissue

        self.path = path
        self.name = str(path)
        self.image = load_tissue(path)
        self.height, self.width = self.image.shape[:2]

    def thumbnail(self) -> np.ndarray:
        step = max(1, math.ceil(max(self.width, self.height) / _THUMBNAIL_SIDE))
        return self.image[::step, ::step]

    def region(self, x: int, y: int, size: int) -> np.ndarray:
        return np.ascontiguousarray(self.image[y : y + size, x : x + size])


class DicomSlide(Slide):
    """Level 0 of a DICOM WSI series; the mask comes from its smallest VOLUME level."""

    def __init__(self, series: object):
        levels = series.levels()  # type: ignore[attr-defined]
        if not levels:
            raise InvalidInputError(f"series {series.uid} has no VOLUME instance")  # type: ignore[attr-defined]
        self.level0 = levels[0].instances[0]
        self.smallest = levels[-1].instances[0]
        self.name = str(self.level0.path)
        self.width = self.level0.total_columns
        self.height = self.level0.total_rows

    def thumbnail(self) -> np.ndarray:
        inst = self.smallest
        step = max(1, math.ceil(max(inst.total_columns, inst.total_rows) / _THUMBNAIL_SIDE))
        image = _assemble(inst.path, 0, 0, inst.total_columns, inst.total_rows)
        return image[::step, ::step]

    def region(self, x: int, y: int, size: int) -> np.ndarray:
        return _assemble(self.level0.path, x, y, size, size)


def _assemble(path: Path, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The RGB pixels of [x, x+width) x [y, y+height) of one instance's total pixel matrix."""
    from wsitranscode.dicom.decode import PixelInfo, decode_frame
    from wsitranscode.dicom.frames import FrameReader
    from wsitranscode.quality.metrics import to_rgb8

    out = np.full((height, width, 3), 255, dtype=np.uint8)
    with FrameReader(path) as reader:
        info = PixelInfo.from_dataset(reader.header)
        for index, (col, row) in enumerate(reader.tile_positions()):
            if col >= x + width or row >= y + height:
                continue
            if col + info.columns <= x or row + info.rows <= y:
                continue
            tile = to_rgb8(decode_frame(reader.read_frame(index), info), info.bits_stored)
            if tile.shape[2] == 1:
                tile = np.repeat(tile, 3, axis=2)
            x0, y0 = max(col, x), max(row, y)
            x1, y1 = min(col + info.columns, x + width), min(row + info.rows, y + height)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[y0 - row : y1 - row, x0 - col : x1 - col]
    return out


def open_slides(sources: list[Path]) -> list[Slide]:
    """Every slide in these sources: DICOM WSI folders/files, image files, folders of images."""
    from wsitranscode.dicom.scan import scan

    slides: list[Slide] = []
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise UsageError("training source not found", path=source)
        images = (
            [source]
            if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES
            else sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if source.is_dir()
            else []
        )
        slides.extend(ImageSlide(path) for path in images)
        if not (source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES):
            slides.extend(DicomSlide(series) for series in scan(source).series)
    if not slides:
        raise UsageError(
            "no slides in the training sources (DICOM WSI series, or PNG/JPEG/TIFF/SVS images): "
            + ", ".join(map(str, sources))
        )
    return slides


@dataclass
class TileSet:
    """Tiles (N x size x size x 3 uint8) and the slide each came from."""

    tiles: np.ndarray
    slides: list[str]

    def __len__(self) -> int:
        return len(self.tiles)


def sample_tissue_tiles(slide: Slide, size: int, count: int, seed: int) -> list[np.ndarray]:
    """Up to `count` non-overlapping level-0 tiles with >= 30% tissue (seeded)."""
    from wsitranscode.quality.sampling import sample_tiles, tissue_mask

    if slide.width < size or slide.height < size:
        return []
    mask = tissue_mask(slide.thumbnail())
    picks = sample_tiles(mask, (slide.width, slide.height), size, count, seed)
    return [slide.region(p.x, p.y, size) for p in sorted(picks, key=lambda p: (p.y, p.x))]


def split_by_slide(names: list[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(training, validation) slide names; at least one of each when there are two or more."""
    ordered = sorted(names)
    if len(ordered) < 2 or val_fraction <= 0:
        return set(ordered), set()
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(ordered), size=n_val, replace=False).tolist())
    val = {name for i, name in enumerate(ordered) if i in chosen}
    return set(ordered) - val, val


def build_tile_sets(
    slides: list[Slide],
    *,
    tile_size: int,
    tiles_per_slide: int,
    val_fraction: float,
    seed: int,
    validation: list[str] | None = None,
) -> tuple[TileSet, TileSet]:
    """(training, validation) tiles; validation slides are `validation` or a seeded choice."""
    names = [s.name for s in slides]
    if validation:

        def matches(name: str, wanted: str) -> bool:
            return name.endswith(wanted) or Path(name).name == wanted

        unknown = [v for v in validation if not any(matches(n, v) for n in names)]
        if unknown:
            raise UsageError(
                f"--val-slide {', '.join(unknown)}: no such slide in the training sources; "
                f"known slides: {', '.join(sorted(Path(n).name for n in names))}"
            )
        val_names = {n for n in names if any(matches(n, v) for v in validation)}
    else:
        _, val_names = split_by_slide(names, val_fraction, seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    train_from: list[str] = []
    val_from: list[str] = []
    for index, slide in enumerate(sorted(slides, key=lambda s: s.name)):
        tiles = sample_tissue_tiles(slide, tile_size, tiles_per_slide, seed + index)
        if slide.name in val_names:
            val.extend(tiles)
            val_from.extend([slide.name] * len(tiles))
        else:
            train.extend(tiles)
            train_from.extend([slide.name] * len(tiles))
    if not train:
        raise UsageError(f"no tissue tiles of {tile_size}x{tile_size} found in the training slides")
    empty = np.zeros((0, tile_size, tile_size, 3), dtype=np.uint8)
    return (
        TileSet(np.stack(train), train_from),
        TileSet(np.stack(val) if val else empty, val_from),
    )
