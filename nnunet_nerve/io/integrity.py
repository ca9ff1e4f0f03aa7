"""Refusing damaged or incomplete image files before SimpleITK reads them.

ITK fills voxels missing from a truncated file with zeros and only prints a warning, so an
interrupted copy would be read as an image with zeroed slices. ``check_complete(path)``
raises ``NerveError("<path>: damaged or incomplete file (...)")`` unless the file holds
every byte its header promises:

- NIfTI (.nii, .nii.gz; compression recognised by the gzip magic bytes, not the name):
  the (decompressed) stream must end with gzip's end-of-stream marker and a matching CRC,
  and hold at least ``vox_offset + prod(dim[1..dim[0]]) * bitpix / 8`` bytes;
- NRRD (.nrrd, attached or detached data; raw, gzip or bzip2 encoding): the data must hold
  ``prod(sizes) * sizeof(type)`` bytes, a compressed stream must end properly;
- MetaImage (.mha, .mhd with its data file; raw or zlib-compressed): the data must hold
  ``prod(DimSize) * ElementNumberOfChannels * sizeof(ElementType)`` bytes, a compressed
  stream must end properly.

Headers this module cannot interpret (an ASCII NRRD, a file list) are left to ITK.
"""
from __future__ import annotations

import bz2
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from nnunet_nerve.errors import NerveError

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

#: Bytes per value of MetaImage's element types (MetaIO's metaTypes.h).
META_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def damaged(path: "str | os.PathLike", reason: str) -> NerveError:
    return NerveError(f"{path}: damaged or incomplete file ({reason})")


def check_complete(path: "str | os.PathLike") -> None:
    """NerveError naming ``path`` when the image file is damaged or shorter than its header says."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            _check_nifti(path)
        elif name.endswith(".nrrd"):
            _check_nrrd(path)
        elif name.endswith((".mha", ".mhd")):
            _check_metaimage(path)
    except OSError as e:
        raise NerveError(f"{path}: cannot read file ({e.strerror or e})") from None


# --- compressed streams ---------------------------------------------------------------------

def _gzip_length(path: Path, offset: int = 0) -> int:
    """Bytes in the gzip stream that starts at ``offset``; NerveError when it is cut or corrupt."""
    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _drain(stream)
        except EOFError:
            raise damaged(path, "the gzip stream ends before its end marker: the file was cut short") from None
        except (gzip.BadGzipFile, zlib.error) as e:
            raise damaged(path, f"corrupt gzip stream: {e}") from None


def _zlib_length(path: Path, offset: int) -> int:
    """Bytes in the zlib stream (MetaImage's compression) that starts at ``offset``."""
    inflater = zlib.decompressobj()
    total = 0
    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            while not inflater.eof:
                chunk = raw.read(_CHUNK)
                if not chunk:
                    raise damaged(path, "the compressed data ends before its end marker: the file was cut short")
                total += len(inflater.decompress(chunk))
        except zlib.error as e:
            raise damaged(path, f"corrupt compressed data: {e}") from None
    return total


def _bz2_length(path: Path, offset: int) -> int:
    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            with bz2.BZ2File(raw, mode="rb") as stream:
                return _drain(stream)
        except EOFError:
            raise damaged(path, "the bzip2 stream ends before its end marker: the file was cut short") from None
        except OSError as e:
            raise damaged(path, f"corrupt bzip2 stream: {e}") from None


def _drain(stream) -> int:
    total = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return total
        total += len(chunk)


def _require(path: Path, have: int, need: int, what: str) -> None:
    if have < need:
        raise damaged(path, f"{what} holds {have} bytes, the header needs {need}")


# --- NIfTI ----------------------------------------------------------------------------------

def _nifti_needed_bytes(path: Path, header: bytes) -> int:
    """vox_offset + voxel bytes from a NIfTI-1 or NIfTI-2 header (either byte order)."""
    for endian in "<>":
        if len(header) >= 4 and struct.unpack(endian + "i", header[:4])[0] == 348 and len(header) >= 348:
            dim = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = struct.unpack(endian + "f", header[108:112])[0]
            break
        if len(header) >= 4 and struct.unpack(endian + "i", header[:4])[0] == 540 and len(header) >= 540:
            dim = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        raise damaged(path, f"no complete NIfTI header ({len(header)} bytes read)")
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        raise damaged(path, f"invalid NIfTI header (dim[0] = {ndim}, bitpix = {bitpix})")
    voxels = int(np.prod([max(int(d), 0) for d in dim[1:ndim + 1]], dtype=np.int64))
    return int(vox_offset) + voxels * (bitpix // 8)


def _check_nifti(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == GZIP_MAGIC:
        length = _gzip_length(path)
        with gzip.open(path, "rb") as f:
            header = f.read(540)
        _require(path, length, _nifti_needed_bytes(path, header), "the decompressed file")
    else:
        with open(path, "rb") as f:
            header = f.read(540)
        _require(path, path.stat().st_size, _nifti_needed_bytes(path, header), "the file")


# --- NRRD -----------------------------------------------------------------------------------

def _nrrd_type_bytes(name: str) -> "int | None":
    name = name.strip().lower()
    if name == "block":
        return None
    if "float" in name:
        return 4
    if "double" in name:
        return 8
    if "long long" in name or "longlong" in name or "int64" in name:
        return 8
    if "short" in name or "int16" in name:
        return 2
    if "char" in name or "int8" in name:
        return 1
    return 4


def _read_text_header(path: Path, stop) -> "tuple[dict, int]":
    """({lower-case key: value}, byte offset after the header) of a line-based header that
    ends at the first line for which ``stop(key, line)`` is true (that line included)."""
    fields = {}
    with open(path, "rb") as f:
        while True:
            raw = f.readline()
            if not raw:
                return fields, f.tell()
            line = raw.decode("latin-1").rstrip("\r\n")
            key, sep, value = line.partition(":" if path.name.lower().endswith(".nrrd") else "=")
            key = key.strip().lower()
            if sep and not value.startswith("="):
                fields[key] = value.strip()
            if stop(key, line):
                return fields, f.tell()


def _check_nrrd(path: Path) -> None:
    fields, data_start = _read_text_header(path, lambda key, line: line.strip() == "")
    data_file = fields.get("data file", fields.get("datafile"))
    target = path
    if data_file:
        if data_file.split()[0].upper() == "LIST" or len(data_file.split()) > 1:
            return
        target = (path.parent / data_file)
        data_start = 0
        if not target.is_file():
            raise damaged(path, f"its data file {target} is missing")
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
    except (KeyError, ValueError):
        raise damaged(path, "no valid 'sizes' field in the NRRD header") from None
    per_value = _nrrd_type_bytes(fields.get("type", ""))
    encoding = fields.get("encoding", "raw").lower()
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    if per_value is None or encoding not in ("raw", "gzip", "gz", "bzip2", "bz2"):
        return
    need = int(np.prod(sizes, dtype=np.int64)) * per_value
    if encoding == "raw":
        if skip >= 0:
            _require(target, target.stat().st_size - data_start - skip, need, "the raw data")
        else:
            _require(target, target.stat().st_size - data_start, need, "the raw data")
        return
    length = (_gzip_length if encoding in ("gzip", "gz") else _bz2_length)(target, data_start)
    _require(target, length - max(skip, 0), need, "the decompressed data")


# --- MetaImage ------------------------------------------------------------------------------

def _check_metaimage(path: Path) -> None:
    fields, data_start = _read_text_header(path, lambda key, line: key == "elementdatafile")
    data_file = fields.get("elementdatafile", "")
    if not data_file:
        raise damaged(path, "the MetaImage header ends before ElementDataFile")
    target = path
    if data_file.upper() != "LOCAL":
        if data_file.split()[0].upper() == "LIST" or "%" in data_file:
            return
        target = path.parent / data_file
        data_start = 0
        if not target.is_file():
            raise damaged(path, f"its data file {target} is missing")
    per_value = META_TYPE_BYTES.get(fields.get("elementtype", "").upper())
    try:
        sizes = [int(s) for s in fields["dimsize"].split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
    except (KeyError, ValueError):
        raise damaged(path, "no valid DimSize in the MetaImage header") from None
    header_size = int(fields.get("headersize", "0") or 0)
    need = int(np.prod(sizes, dtype=np.int64)) * channels * (per_value or 0)
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if compressed:
        length = _zlib_length(target, data_start + max(header_size, 0))
        _require(target, length, need, "the decompressed data")
    elif per_value:
        size = target.stat().st_size - data_start
        _require(target, size - max(header_size, 0), need, "the raw data")
