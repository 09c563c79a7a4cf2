"""Files that are small on the wire and huge once decoded, built by streaming compression (the
test process never holds the decoded pixels either)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from tests.bad_inputs import dicom_bytes, save


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 6300, colour_type: int = 6, depth: int = 8) -> bytes:
    """A real, complete PNG of side x side zero pixels (RGBA 8-bit by default: 6300^2 is 160 MB
    decoded, about 160 KB on the wire)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + side * channels * depth // 8)  # filter byte + pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def tiff_claiming(side: int = 6300) -> bytes:
    """A float32 TIFF whose header claims side x side pixels (strip data cut short)."""
    small = save(__import__("PIL.Image", fromlist=["Image"]).fromarray(np.zeros((4, 4), np.float32)), "TIFF")
    out = bytearray(small)
    (ifd,) = struct.unpack("<I", out[4:8])
    (count,) = struct.unpack("<H", out[ifd:ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", out[at:at + 4])
        if tag in (256, 257, 278):  # width, length, rows per strip
            fmt = "<H" if kind == 3 else "<I"
            struct.pack_into(fmt, out, at + 8, side)
    return bytes(out)


def deflated_dicom(side: int = 2048, frames: int = 32) -> bytes:
    """A DICOM file in the Deflated Explicit VR Little Endian transfer syntax whose pixel data is
    side^2 x 16 bits x frames of zeros (256 MiB by default) in a few hundred KB."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((side, side), np.uint16), pixel_data=False)))
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    dataset = body.getvalue()
    pixels = 2 * side * side * frames
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [z.compress(dataset), z.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels))]
    block = b"\x00" * 2**22
    for start in range(0, pixels, len(block)):
        out.append(z.compress(block[:min(len(block), pixels - start)]))
    out.append(z.flush())
    head = io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    return head.getvalue() + b"".join(out)


def dicom_claiming(rows: int = 60_000, cols: int = 60_000) -> bytes:
    """An uncompressed DICOM whose header claims rows x cols pixels over a few bytes of data."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((8, 8), np.uint16))))
    ds.Rows, ds.Columns = rows, cols
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
