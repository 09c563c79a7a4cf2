"""A corpus of awkward and broken image files, generated on the fly (nothing binary committed).

Each case is (name, file bytes, file suffix, expected): expected is "ok" when a sensible answer is
due (the app must cope: RGBA, palette, 16-bit, EXIF-rotated ...), "error" when only a clear
message is (empty, broken, not an image, absurd sizes), or "either".
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw


def digit_rgb(side: int = 280, ink=(0, 0, 0), paper=(255, 255, 255)) -> Image.Image:
    img = Image.new("RGB", (side, side), paper)
    ImageDraw.Draw(img).line([(side * 0.3, side * 0.2), (side * 0.72, side * 0.2), (side * 0.45, side * 0.85)],
                             fill=ink, width=max(2, side // 12))
    return img


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def exif_rotated() -> bytes:
    """A 7 stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    img = digit_rgb().rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(img, "JPEG", exif=exif.tobytes(), quality=95)


def animated_gif() -> bytes:
    frames = [digit_rgb().convert("P"), Image.new("P", (280, 280), 0)]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def film(seed: int = 0, side: int = 256) -> np.ndarray:
    """A film-like 8-bit image using the full 0-255 range: dark field, two bright lung fields,
    a brighter spine, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    a = 30 + 20 * rng.random((side, side))
    for c in (0.3, 0.7):
        a[((xx - c) / 0.17) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1] += 90
    a[np.abs(xx - 0.5) < 0.04] += 140
    a = (a - a.min()) / (a.max() - a.min()) * 255
    return np.round(a).astype(np.uint8)


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, voi_lut: np.ndarray | None = None,
                slope: float = 1.0, intercept: float = 0.0, pixel_data: bool = True) -> bytes:
    """A DICOM Part 10 file (explicit VR little endian, 16 bits allocated) made with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "DX", "Test^Synthetic", "0"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.add_new(0x00283006, "OW", np.asarray(voi_lut, "<u2").tobytes())  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    if pixel_data:
        ds.PixelData = pixels.astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def corrupt_crc() -> bytes:
    data = bytearray(save(digit_rgb(), "PNG"))
    data[40] ^= 0xFF
    return bytes(data)


CASES: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("zero_bytes", lambda: b"", "png", "error"),
    ("text_named_png", lambda: b"this is not an image\n" * 10, "png", "error"),
    ("truncated_png", lambda: save(digit_rgb(), "PNG")[:200], "png", "error"),
    ("truncated_jpeg", lambda: save(digit_rgb(), "JPEG")[:300], "jpg", "error"),
    ("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>',
     "svg", "error"),
    ("html", lambda: b"<html><body><img src=x onerror=alert(1)></body></html>", "png", "error"),
    ("pdf_named_png", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "png", "error"),
    ("json_named_png", lambda: b'{"image": [1, 2, 3]}', "png", "error"),
    ("corrupt_crc_png", corrupt_crc, "png", "either"),
    ("bomb_header_50k", lambda: png_claiming(50_000, 50_000), "png", "error"),
    ("huge_10k_x_10k", lambda: save(Image.new("L", (10_000, 10_000), 255), "PNG"), "png", "error"),
    ("one_pixel", lambda: save(Image.new("L", (1, 1), 0), "PNG"), "png", "error"),
    ("one_by_5000", lambda: save(Image.new("L", (5000, 1), 0), "PNG"), "png", "error"),
    ("three_by_3000", lambda: save(Image.new("L", (3, 3000), 0), "PNG"), "png", "error"),
    ("blank_white", lambda: save(Image.new("L", (280, 280), 255), "PNG"), "png", "error"),
    ("all_black", lambda: save(Image.new("L", (280, 280), 0), "PNG"), "png", "error"),
    ("uniform_grey", lambda: save(Image.new("L", (280, 280), 128), "PNG"), "png", "error"),
    ("transparent_rgba", lambda: save(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), "PNG"), "png", "error"),
    ("digit_png", lambda: save(digit_rgb(), "PNG"), "png", "ok"),
    ("digit_jpeg", lambda: save(digit_rgb(), "JPEG", quality=90), "jpg", "ok"),
    ("digit_webp", lambda: save(digit_rgb(), "WEBP", lossless=True), "webp", "ok"),
    ("digit_bmp", lambda: save(digit_rgb(), "BMP"), "bmp", "ok"),
    ("digit_tiff", lambda: save(digit_rgb(), "TIFF"), "tiff", "ok"),
    ("digit_gif", lambda: save(digit_rgb().convert("P"), "GIF"), "gif", "ok"),
    ("animated_gif", animated_gif, "gif", "ok"),
    ("palette_png", lambda: save(digit_rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG"),
     "png", "ok"),
    ("grey_alpha_png", lambda: save(digit_rgb().convert("LA"), "PNG"), "png", "ok"),
    ("one_bit_png", lambda: save(digit_rgb().convert("1"), "PNG"), "png", "ok"),
    ("rgba_ink_on_transparent", lambda: save(Image.merge("RGBA", [Image.new("L", (280, 280), 0)] * 3
                                                          + [Image.eval(digit_rgb().convert("L"), lambda v: 255 - v)]),
                                             "PNG"), "png", "ok"),
    ("cmyk_jpeg", lambda: save(digit_rgb().convert("CMYK"), "JPEG"), "jpg", "ok"),
    ("sixteen_bit_png", lambda: save(Image.fromarray(np.asarray(digit_rgb().convert("L"), np.uint16) * 257),
                                     "PNG"), "png", "ok"),
    ("float_tiff", lambda: save(Image.fromarray(np.asarray(digit_rgb().convert("L"), np.float32) / 255), "TIFF"),
     "tiff", "ok"),
    ("exif_rotated_jpeg", exif_rotated, "jpg", "ok"),
    ("grey_saved_as_rgb", lambda: save(digit_rgb().convert("L").convert("RGB"), "PNG"), "png", "ok"),
    ("white_on_black", lambda: save(digit_rgb(ink=(255, 255, 255), paper=(0, 0, 0)), "PNG"), "png", "ok"),
    ("coloured_ink", lambda: save(digit_rgb(ink=(200, 0, 40), paper=(250, 250, 210)), "PNG"), "png", "ok"),
    ("tiny_12px", lambda: save(digit_rgb(12), "PNG"), "png", "either"),
    ("big_4000px", lambda: save(digit_rgb(4000), "PNG"), "png", "ok"),
    ("wide_aspect", lambda: save(Image.new("L", (2000, 60), 255), "PNG"), "png", "error"),
    ("noise", lambda: save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (280, 280), np.uint8)), "PNG"),
     "png", "either"),
    ("ico", lambda: save(digit_rgb(64), "ICO"), "ico", "either"),
    ("dicom_no_pixel_data", lambda: dicom_bytes(film(), pixel_data=False), "dcm", "error"),
    ("dicom_cut_short", lambda: dicom_bytes(film())[:-5000], "dcm", "error"),
    ("dicom_garbage_after_preamble", lambda: b"\0" * 128 + b"DICM" + bytes(range(256)) * 4, "dcm", "error"),
    ("dicom_monochrome1_12bit", lambda: dicom_bytes(4095 - film().astype(np.uint16) * 16, photometric="MONOCHROME1"),
     "dcm", "either"),
    ("dicom_named_png", lambda: dicom_bytes(film().astype(np.uint16) * 16, window=(2000, 1000)), "png", "either"),
]


def files(tmp_dir) -> Iterator[tuple[str, str, str]]:
    for name, make, suffix, expected in CASES:
        path = tmp_dir / f"{name}.{suffix}"
        path.write_bytes(make())
        yield name, str(path), expected
