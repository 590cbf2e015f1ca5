"""Fuzzing the DICOM reading path (scan, FrameReader, PixelInfo, decode_frame) with hypothesis.

Every mutated file must give either a result or one of our errors (one line, naming the file),
in bounded time, and never a traceback from pydicom, numpy or a codec library. Mutations: random
bytes anywhere in the header, truncation, elements rewritten with hostile values, wrong VRs and
lying lengths, offset tables pointing anywhere, fragments removed or repeated, and frames replaced
by tiny codestreams that declare gigantic images (decompression bombs).

The number of examples per test is small for CI; WSITRANSCODE_FUZZ_EXAMPLES raises it for a
campaign (docs/reliability.md records the last one). Runs are derandomized: a failure reproduces.
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate

from wsitranscode import synth
from wsitranscode.dicom.codestream import declared_image
from wsitranscode.dicom.decode import PixelInfo, decode_frame
from wsitranscode.dicom.frames import FrameReader
from wsitranscode.dicom.scan import scan
from wsitranscode.errors import DecodeError, UnsupportedError, WsiTranscodeError

EXAMPLES = int(os.environ.get("WSITRANSCODE_FUZZ_EXAMPLES", "40"))
SECONDS_PER_CASE = 5.0
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# name -> build_wsi arguments; small tiles so that each file has 12 frames and reads in ms
BASES = {
    "native": {"transfer_syntax": synth.EXPLICIT_VR_LITTLE_ENDIAN},
    "implicit": {"transfer_syntax": synth.EXPLICIT_VR_LITTLE_ENDIAN, "implicit_vr": True},
    "jpeg-bot": {"transfer_syntax": synth.JPEG_BASELINE},
    "jpeg-fragments": {
        "transfer_syntax": synth.JPEG_BASELINE,
        "bot": False,
        "fragments_per_frame": 2,
    },
    "j2k-eot": {"transfer_syntax": synth.JPEG_2000_LOSSLESS, "eot": True, "bot": False},
    "jxl-sparse": {"transfer_syntax": synth.JPEG_XL, "dimension_organization": "TILED_SPARSE"},
}

# (tag, VR) of elements the reading path depends on
CRITICAL_ELEMENTS = {
    "Rows": (0x00280010, b"US"),
    "Columns": (0x00280011, b"US"),
    "SamplesPerPixel": (0x00280002, b"US"),
    "BitsAllocated": (0x00280100, b"US"),
    "BitsStored": (0x00280101, b"US"),
    "PixelRepresentation": (0x00280103, b"US"),
    "PlanarConfiguration": (0x00280006, b"US"),
    "NumberOfFrames": (0x00280008, b"IS"),
    "TotalPixelMatrixColumns": (0x00480006, b"UL"),
    "TotalPixelMatrixRows": (0x00480007, b"UL"),
    "PhotometricInterpretation": (0x00280004, b"CS"),
    "SeriesInstanceUID": (0x0020000E, b"UI"),
    "SOPClassUID": (0x00080016, b"UI"),
    "ImageType": (0x00080008, b"CS"),
    "DimensionOrganizationType": (0x00209311, b"CS"),
}
HOSTILE_VALUES = {
    b"US": [0, 1, 3, 7, 64, 0x7FFF, 0xFFFF],
    b"UL": [0, 1, 2**31, 2**32 - 1],
    b"IS": [b"0", b"-1", b"2147483648", b"999999999999", b"1e9", b"abc", b"", b"12\\12"],
    b"CS": [b"", b"MONOCHROME3", b"YBR_FULL_422", b"\x00\x00", b"A" * 64, b"../../x"],
    b"UI": [b"", b"1.2", b"../../etc", b"/abs/path", b"1." + b"9" * 80],
}
OTHER_VRS = [b"US", b"UL", b"SS", b"SL", b"OB", b"UN", b"SQ", b"DS", b"IS", b"CS", b"ZZ"]
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}


# ---------------------------------------------------------------------- what must hold


def read_everything(path: Path) -> list[str]:
    """Scan, open, locate and decode like a recode does; returns the problems found (one line
    each). Raises only WsiTranscodeError; anything else is a finding."""
    problems = []
    result = scan(path)
    problems += [s.reason for s in result.skipped]
    for series in result.series:
        problems += series.problems
        for instance in series.instances:
            try:
                with FrameReader(instance.path) as reader:
                    reader.tile_positions()
                    info = PixelInfo.from_dataset(reader.header)
                    for index in sorted({0, reader.number_of_frames - 1}):
                        decode_frame(reader.read_frame(index), info)
            except WsiTranscodeError as err:
                problems.append(err.one_line())
    for line in problems:
        assert "\n" not in line and len(line) < 2000, line[:300]
    return problems


def assert_handled(path: Path) -> None:
    started = time.perf_counter()
    try:
        read_everything(path)
    except WsiTranscodeError as err:  # allowed: ours, one line, naming the file
        assert "\n" not in str(err)
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS_PER_CASE, f"{elapsed:.1f} s for one mutated file"


@contextlib.contextmanager
def address_space_growth_limit(extra: int):
    """Let this process map at most `extra` more bytes while inside (RLIMIT_AS, soft limit):
    a decoder that tries to allocate a gigantic image fails with MemoryError instead."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    current = _vm_size()
    if current is None:
        pytest.skip("no /proc/self/status here to measure the address space")
    resource.setrlimit(resource.RLIMIT_AS, (current + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------- base files


class Bases(dict):
    """The base files' bytes by name (a short repr: hypothesis prints it with a failing case)."""

    def __repr__(self) -> str:
        return f"Bases({', '.join(self)})"


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> Bases:
    image = synth.synthetic_tissue(96, 128, seed=3)
    files = Bases()
    for name, kwargs in BASES.items():
        folder = tmp_path_factory.mktemp(f"fuzz-{name}")
        written = synth.build_wsi(
            image, folder, tile_size=32, levels=1, label=False, thumbnail=False, **kwargs
        )
        files[name] = written[0].read_bytes()
    return files


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-cases")


def _write_case(workdir: Path, data: bytes) -> Path:
    path = workdir / "case.dcm"
    path.write_bytes(data)
    return path


def test_bases_read_cleanly(bases, workdir):
    for name, data in bases.items():
        assert read_everything(_write_case(workdir, data)) == [], name


# ---------------------------------------------------------------------- raw byte mutations


def _pixel_data_start(data: bytes) -> int:
    return data.rfind(b"\xe0\x7f\x10\x00")


@FUZZ
@given(name=st.sampled_from(sorted(BASES)), seed=st.data())
def test_random_header_bytes(bases, workdir, name, seed):
    data = bytearray(bases[name])
    header_end = _pixel_data_start(bytes(data)) + 16
    count = seed.draw(st.integers(1, 8))
    for _ in range(count):
        position = seed.draw(st.integers(132, header_end - 1))
        data[position] = seed.draw(st.integers(0, 255))
    assert_handled(_write_case(workdir, bytes(data)))


@FUZZ
@given(name=st.sampled_from(sorted(BASES)), fraction=st.floats(0, 1))
def test_truncated_anywhere(bases, workdir, name, fraction):
    data = bases[name]
    assert_handled(_write_case(workdir, data[: int(len(data) * fraction)]))


@FUZZ
@given(name=st.sampled_from(sorted(BASES)), seed=st.data())
def test_random_bytes_in_pixel_data(bases, workdir, name, seed):
    data = bytearray(bases[name])
    start = _pixel_data_start(bytes(data))
    for _ in range(seed.draw(st.integers(1, 16))):
        data[seed.draw(st.integers(start, len(data) - 1))] = seed.draw(st.integers(0, 255))
    assert_handled(_write_case(workdir, bytes(data)))


# ---------------------------------------------------------------------- element mutations


def _find_element(data: bytes, tag: int, explicit: bool) -> tuple[int, int, int] | None:
    """(start, value start, value length) of the first top-level occurrence of `tag`."""
    key = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    start = data.find(key, 132)
    if start < 0:
        return None
    if not explicit:
        (length,) = struct.unpack("<I", data[start + 4 : start + 8])
        return start, start + 8, length
    vr = data[start + 4 : start + 6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack("<I", data[start + 8 : start + 12])
        return start, start + 12, length
    (length,) = struct.unpack("<H", data[start + 6 : start + 8])
    return start, start + 8, length


def _element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    length = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", length & 0xFFFFFFFF) + value
    return head + struct.pack("<H", length & 0xFFFF) + value


def _encode_value(vr: bytes, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value + b" " * (len(value) % 2)
    return struct.pack("<H" if vr == b"US" else "<I", value)


def _replace_element(data: bytes, keyword: str, make) -> bytes | None:
    tag, vr = CRITICAL_ELEMENTS[keyword]
    found = _find_element(data, tag, explicit=True)
    if found is None:
        return None
    start, value_start, length = found
    return data[:start] + make(tag, vr) + data[value_start + length :]


@FUZZ
@given(
    name=st.sampled_from([n for n in sorted(BASES) if n != "implicit"]),
    keyword=st.sampled_from(sorted(CRITICAL_ELEMENTS)),
    choice=st.data(),
)
def test_hostile_values_wrong_vrs_and_lying_lengths(bases, workdir, name, keyword, choice):
    _, vr = CRITICAL_ELEMENTS[keyword]
    kind = choice.draw(st.sampled_from(["hostile", "random", "vr", "length"]))
    if kind == "hostile":
        value = _encode_value(vr, choice.draw(st.sampled_from(HOSTILE_VALUES[vr])))

        def make(tag, vr):
            return _element(tag, vr, value)
    elif kind == "random":
        value = choice.draw(st.binary(max_size=12))

        def make(tag, vr):
            return _element(tag, vr, value)
    elif kind == "vr":
        other = choice.draw(st.sampled_from(OTHER_VRS))
        original = _find_element(bases[name], CRITICAL_ELEMENTS[keyword][0], True)
        assert original is not None
        _, value_start, length = original
        value = bases[name][value_start : value_start + length]

        def make(tag, vr):
            return _element(tag, other, value)
    else:
        lie = choice.draw(st.sampled_from([0, 1, 3, 0xFFFF, 0xFFFFFFF0, 0xFFFFFFFF]))

        def make(tag, vr):
            value = _encode_value(vr, HOSTILE_VALUES[vr][1])
            return _element(tag, vr, value, length=lie)

    mutated = _replace_element(bases[name], keyword, make)
    if mutated is None:
        return  # this base file does not have the element
    assert_handled(_write_case(workdir, mutated))


def test_absurd_dimensions_are_refused_with_a_clear_error(bases, workdir):
    def huge(tag, vr):
        return _element(tag, vr, struct.pack("<I", 2**31))

    mutated = _replace_element(bases["jpeg-bot"], "TotalPixelMatrixColumns", huge)
    assert mutated is not None
    problems = read_everything(_write_case(workdir, mutated))
    assert problems and "TotalPixelMatrixColumns" in " ".join(problems)


def test_frame_larger_than_the_limit_is_unsupported(bases, workdir):
    def big(tag, vr):
        return _element(tag, vr, struct.pack("<H", 0xFFFF))

    mutated = _replace_element(bases["jpeg-bot"], "Rows", big)
    mutated = _replace_element(mutated, "Columns", big)
    with (
        FrameReader(_write_case(workdir, mutated)) as reader,
        pytest.raises(UnsupportedError, match="larger than this tool decodes"),
    ):
        PixelInfo.from_dataset(reader.header)


# ---------------------------------------------------------------------- encapsulated structure


def _items(data: bytes) -> list[tuple[int, int]]:
    """(start, value length) of every item of the encapsulated Pixel Data, the BOT first."""
    pos = _pixel_data_start(data) + 12
    items = []
    while pos + 8 <= len(data):
        tag, length = struct.unpack("<4sI", data[pos : pos + 8])
        if tag != b"\xfe\xff\x00\xe0":
            break
        items.append((pos, length))
        pos += 8 + length
    return items


def _frames(data: bytes, workdir: Path) -> list[bytes]:
    with FrameReader(_write_case(workdir, data)) as reader:
        return [reader.read_frame(i) for i in range(reader.number_of_frames)]


@FUZZ
@given(
    name=st.sampled_from(["jpeg-bot", "jpeg-fragments", "j2k-eot", "jxl-sparse"]),
    choice=st.data(),
)
def test_fragments_removed_repeated_or_mislabelled(bases, workdir, name, choice):
    data = bases[name]
    items = _items(data)
    item_start, item_length = items[choice.draw(st.integers(1, len(items) - 1))]
    item = data[item_start : item_start + 8 + item_length]
    action = choice.draw(st.sampled_from(["remove", "repeat", "tag", "length"]))
    if action == "remove":
        mutated = data[:item_start] + data[item_start + len(item) :]
    elif action == "repeat":
        mutated = data[:item_start] + item + data[item_start:]
    elif action == "tag":
        tag = choice.draw(st.binary(min_size=4, max_size=4))
        mutated = data[:item_start] + tag + data[item_start + 4 :]
    else:
        length = choice.draw(st.integers(0, 2**32 - 1))
        mutated = data[: item_start + 4] + struct.pack("<I", length) + data[item_start + 8 :]
    assert_handled(_write_case(workdir, mutated))


@FUZZ
@given(choice=st.data())
def test_extended_offset_table_pointing_anywhere(bases, workdir, choice):
    data = bytearray(bases["j2k-eot"])
    found = _find_element(bytes(data), 0x7FE00001, explicit=True)
    assert found is not None
    _, value_start, length = found
    entries = length // 8
    for _ in range(choice.draw(st.integers(1, 3))):
        entry = choice.draw(st.integers(0, entries - 1))
        offset = choice.draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(data) + 64)))
        data[value_start + 8 * entry : value_start + 8 * entry + 8] = struct.pack("<Q", offset)
    assert_handled(_write_case(workdir, bytes(data)))


@FUZZ
@given(choice=st.data())
def test_basic_offset_table_pointing_anywhere(bases, workdir, choice):
    data = bytearray(bases["jpeg-bot"])
    bot = _pixel_data_start(bytes(data)) + 12  # the BOT item header
    (bot_length,) = struct.unpack("<I", data[bot + 4 : bot + 8])
    entry = choice.draw(st.integers(0, bot_length // 4 - 1))
    data[bot + 8 + 4 * entry : bot + 12 + 4 * entry] = struct.pack(
        "<I", choice.draw(st.integers(0, 2**32 - 1))
    )
    assert_handled(_write_case(workdir, bytes(data)))


# ---------------------------------------------------------------------- decompression bombs


def _tile() -> np.ndarray:
    return np.full((32, 32, 3), 200, np.uint8)


def _jpeg_bomb(size: int) -> bytes:
    data = bytearray(imagecodecs.jpeg8_encode(_tile(), level=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", size, size)
    return bytes(data)


def _j2k_bomb(size: int) -> bytes:
    data = bytearray(imagecodecs.jpeg2k_encode(_tile(), level=0, codecformat="j2k"))
    siz = data.index(b"\xff\x51")
    data[siz + 6 : siz + 14] = struct.pack(">II", size, size)  # image size
    data[siz + 22 : siz + 30] = struct.pack(">II", size, size)  # one tile as big
    return bytes(data)


def _j2k_tile_bomb() -> bytes:
    """A 255x255 frame cut into 65,025 tiles of 1x1: 180 bytes that made OpenJPEG use 720 MB."""
    tile = np.full((255, 255, 3), 200, np.uint8)
    data = bytearray(imagecodecs.jpeg2k_encode(tile, level=0, codecformat="j2k"))
    siz = data.index(b"\xff\x51")
    data[siz + 22 : siz + 30] = struct.pack(">II", 1, 1)
    return bytes(data)


def _jpeg_xl_bomb(size: int) -> bytes:
    """A real JPEG XL codestream whose SizeHeader is rewritten to declare size x size."""
    data = imagecodecs.jpegxl_encode(_tile(), level=90)
    bits = int.from_bytes(data[2:], "little")
    assert bits & 1  # synth-sized tiles use the small form: 1 + 5 + 3 (+ 5) bits
    ratio = (bits >> 6) & 7
    used = 9 if ratio else 14
    rest = bits >> used
    header = 0 | (3 << 1) | ((size - 1) << 3) | (1 << 33)  # not small, 30-bit size, ratio 1:1
    stream = header | (rest << 36)
    return b"\xff\x0a" + stream.to_bytes(len(data) + 4, "little")


def _webp_bomb(size: int) -> bytes:
    data = bytearray(imagecodecs.webp_encode(_tile(), level=90, lossless=False))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", size, size)
    return bytes(data)


# kind -> (transfer syntax, photometric, frame side the header declares, bomb)
BOMBS = {
    "jpeg": (synth.JPEG_BASELINE, "YBR_FULL_422", 32, lambda: _jpeg_bomb(65000)),
    "j2k": (synth.JPEG_2000_LOSSLESS, "YBR_RCT", 32, lambda: _j2k_bomb(60000)),
    "j2k-tiles": (synth.JPEG_2000_LOSSLESS, "YBR_RCT", 255, _j2k_tile_bomb),
    "jpeg-xl": (synth.JPEG_XL, "RGB", 32, lambda: _jpeg_xl_bomb(1 << 30)),
    "webp": ("private WebP", "RGB", 32, lambda: _webp_bomb(16383)),
}


CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


def _bomb_info(kind: str) -> PixelInfo:
    from wsitranscode.dicom import syntaxes

    syntax, photometric, side, _ = BOMBS[kind]
    syntax = syntaxes.PRIVATE_WEBP if kind == "webp" else syntax
    return PixelInfo(syntax, side, side, 3, photometric, 8, 8)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("bomb-*.bin")), ids=lambda p: p.stem)
def test_stored_bomb_corpus_is_refused(path):
    info = _bomb_info(path.stem.removeprefix("bomb-"))
    with (
        address_space_growth_limit(512 << 20),
        pytest.raises(DecodeError, match="refused before decoding"),
    ):
        decode_frame(path.read_bytes(), info)


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_decompression_bomb_is_refused_before_allocating(kind):
    info = _bomb_info(kind)
    syntax = info.transfer_syntax_uid
    bomb = BOMBS[kind][3]()
    assert len(bomb) < 2000
    declared = declared_image(bomb, syntax)
    assert declared is not None and (declared.rows * declared.columns > 10**8 or declared.tiles)
    started = time.perf_counter()
    with (
        address_space_growth_limit(512 << 20),
        pytest.raises(DecodeError, match="refused before decoding"),
    ):
        decode_frame(bomb, info)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("kind", ["jpeg", "j2k", "jpeg-xl"])
def test_bomb_inside_a_file_fails_its_frame_only(bases, workdir, kind):
    name = {"jpeg": "jpeg-bot", "j2k": "j2k-eot", "jpeg-xl": "jxl-sparse"}[kind]
    path = _write_case(workdir, bases[name])
    ds = pydicom.dcmread(path)
    frames = _frames(bases[name], workdir)
    frames[3] = BOMBS[kind][3]()
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        ds.pop(keyword, None)
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds.save_as(path, enforce_file_format=True)
    with FrameReader(path) as reader:
        info = PixelInfo.from_dataset(reader.header)
        decode_frame(reader.read_frame(2), info)
        with address_space_growth_limit(512 << 20), pytest.raises(DecodeError) as caught:
            decode_frame(reader.read_frame(3), info)
    assert "refused before decoding" in str(caught.value)


@pytest.mark.parametrize("codec", ["jpeg", "jpegls", "j2k", "jp2", "htj2k", "jxl", "webp", "webpl"])
@pytest.mark.parametrize("shape", [(32, 32), (100, 37), (513, 1025), (240, 320)])
def test_declared_size_matches_real_codestreams(codec, shape):
    rng = np.random.default_rng(sum(shape))
    tile = rng.integers(90, 160, (*shape, 3), dtype=np.uint8)
    encode = {
        "jpeg": lambda t: imagecodecs.jpeg8_encode(t, level=90),
        "jpegls": imagecodecs.jpegls_encode,
        "j2k": lambda t: imagecodecs.jpeg2k_encode(t, codecformat="j2k"),
        "jp2": lambda t: imagecodecs.jpeg2k_encode(t, codecformat="jp2"),
        "htj2k": imagecodecs.htj2k_encode,
        "jxl": lambda t: imagecodecs.jpegxl_encode(t, level=90),
        "webp": lambda t: imagecodecs.webp_encode(t, level=90, lossless=False),
        "webpl": lambda t: imagecodecs.webp_encode(t, lossless=True),
    }[codec]
    declared = declared_image(encode(tile), "")
    assert declared is not None
    assert (declared.rows, declared.columns) == shape
