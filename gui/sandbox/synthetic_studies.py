"""Realistic synthetic DICOM studies, made with pydicom.

- CT-like series: 512x512 16-bit slices with an elliptic body, organs, bone
  and noise, so gzip shrinks them to roughly half as real CT does;
- tiny instances of a few KB (structured reports, small secondary captures);
- multi-frame instances of tens of MB.

UIDs are valid and derived from a seed so a generated study is reproducible.
"""

from __future__ import annotations

import array
import datetime as _dt
import functools
import io
import math
import random
import statistics
import sys
from dataclasses import dataclass
from typing import Iterator, List, Optional

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UID, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # a private-ish test root; generate_uid hashes under it

FAMILY_NAMES = ["Dupont", "Martin", "Peeters", "Janssens", "Garcia", "Smith", "Nguyen", "Rossi"]
GIVEN_NAMES = ["Anne", "Luc", "Marie", "Jan", "Sofia", "Tom", "Lea", "Omar"]


def _uid(*parts: object) -> str:
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts])


@dataclass
class StudySpec:
    patient_id: str
    patient_name: str
    study_uid: str
    study_date: str
    accession: str
    description: str


def make_study_spec(seed: int, description: str = "CT CHEST") -> StudySpec:
    rnd = random.Random(seed)
    name = f"{rnd.choice(FAMILY_NAMES)}^{rnd.choice(GIVEN_NAMES)}"
    date = _dt.date(2024, 1, 1) + _dt.timedelta(days=rnd.randrange(700))
    return StudySpec(
        patient_id=f"PAT{seed:05d}",
        patient_name=name,
        study_uid=_uid("study", seed, description),
        study_date=date.strftime("%Y%m%d"),
        accession=f"ACC{seed:06d}",
        description=description,
    )


def _base_dataset(spec: StudySpec, sop_class: str, sop_uid: str, series_uid: str,
                  modality: str, series_number: int, instance_number: int,
                  series_description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(UID_ROOT + "1")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = spec.accession
    ds.StudyDescription = spec.description
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.Modality = modality
    ds.InstanceNumber = instance_number
    return ds


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# Pixel synthesis without numpy (it would add 40 MB to the bundle for the
# demo alone): each slice is assembled from precomputed noisy variants of
# its rows. Variants of one row are far apart in the stream (> gzip's 32 KB
# window), so compression sees real noise and CT's ~2:1 ratio holds.
_LEVELS = 6      # distinct anatomical positions along z
_VARIANTS = 3    # noisy variants per row and level


def _base_row(y: float, z: float, cols: int) -> List[int]:
    """One row of an anatomy-like CT phantom, Hounsfield + 1024 (air ~24, tissue ~1040)."""
    out = []
    step = 2.0 / (cols - 1) if cols > 1 else 0.0
    lung_level = int(200.0 + 60.0 * math.sin(6 * z))
    for n in range(cols):
        x = -1.0 + n * step
        value = 24
        if (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1.0:
            value = 1040
            if ((x - 0.38) / 0.28) ** 2 + (y / 0.4) ** 2 < 1.0 or ((x + 0.38) / 0.28) ** 2 + (y / 0.4) ** 2 < 1.0:
                value = lung_level
            if (x / 0.8) ** 2 + (y / 0.6) ** 2 > 0.88 and abs(math.sin(8 * math.atan2(y, x) + z)) > 0.7:
                value = 1700
        if ((x + 0.05) / 0.22) ** 2 + ((y - 0.1) / 0.2) ** 2 < 1.0:
            value = 1070
        if (x / 0.09) ** 2 + ((y - 0.48) / 0.09) ** 2 < 1.0:
            value = 1900
        out.append(value)
    return out


@functools.lru_cache(maxsize=4)
def _phantom_rows(rows: int, cols: int) -> List[List[List[bytes]]]:
    """[level][row][variant] -> little-endian uint16 row bytes with noise.

    Built once per image size and shared by every series (slices still
    differ: each picks its row variants at random)."""
    rnd = random.Random(rows * 100003 + cols)
    # Gaussian noise from random bytes through the inverse normal CDF: fresh
    # per row (a reused noise table would give gzip repeats to find).
    normal = statistics.NormalDist()
    quantiles = [normal.inv_cdf((b + 0.5) / 256) for b in range(256)]
    body_lut = [int(round(q * 22.0)) for q in quantiles]
    air_lut = [int(round(q * 4.0)) for q in quantiles]
    levels = []
    for level in range(_LEVELS):
        z = level / _LEVELS * 3.0
        level_rows = []
        for r in range(rows):
            y = -1.0 + r * (2.0 / (rows - 1)) if rows > 1 else 0.0
            base = _base_row(y, z, cols)
            variants = []
            for _ in range(_VARIANTS):
                noisy = [min(4095, max(0, v + (body_lut[b] if v > 100 else air_lut[b])))
                         for v, b in zip(base, rnd.randbytes(cols))]
                row = array.array("H", noisy)
                if sys.byteorder != "little":
                    row.byteswap()
                variants.append(row.tobytes())
            level_rows.append(variants)
        levels.append(level_rows)
    return levels


def _phantom_slice(rows: int, cols: int, position: float, rnd: random.Random,
                   shift: int = 0) -> bytes:
    """Pixel data of one slice at ``position`` in [0, 1), columns rolled by ``shift``."""
    table = _phantom_rows(rows, cols)
    level = table[min(_LEVELS - 1, int(position * _LEVELS))]
    cut = 2 * (shift % cols)
    pieces = []
    for variants in level:
        row = variants[rnd.randrange(_VARIANTS)]
        pieces.append(row[-cut:] + row[:-cut] if cut else row)
    return b"".join(pieces)


def ct_series(spec: StudySpec, slices: int, series_number: int = 1, rows: int = 512,
              cols: int = 512, seed: int = 0) -> Iterator[bytes]:
    """Yield DICOM files of one CT-like series."""
    series_uid = _uid("ct-series", spec.study_uid, series_number)
    rnd = random.Random(seed)
    for n in range(slices):
        sop_uid = _uid("ct", series_uid, n)
        ds = _base_dataset(spec, CT_IMAGE_STORAGE, sop_uid, series_uid, "CT", series_number, n + 1,
                           f"Axial {slices} slices")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = _uid("for", spec.study_uid)
        ds.ImagePositionPatient = [-250.0, -250.0, float(-n * 1.25)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 1.25
        ds.PixelSpacing = [0.976, 0.976]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = _phantom_slice(rows, cols, n / max(slices, 1), rnd)
        yield _to_bytes(ds)


def tiny_instances(spec: StudySpec, count: int, size: int = 4096, series_number: int = 50,
                   seed: int = 0) -> Iterator[bytes]:
    """Small secondary captures of roughly ``size`` bytes each."""
    series_uid = _uid("tiny-series", spec.study_uid, series_number)
    rnd = random.Random(seed)
    side = max(8, int((max(size - 1200, 64) / 2) ** 0.5))
    for n in range(count):
        sop_uid = _uid("tiny", series_uid, n)
        ds = _base_dataset(spec, SECONDARY_CAPTURE_STORAGE, sop_uid, series_uid, "OT", series_number,
                           n + 1, "Key images")
        ds.ConversionType = "WSD"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = side
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        pixels = array.array("H", (rnd.getrandbits(12) for _ in range(side * side)))
        ds.PixelData = pixels.tobytes()
        yield _to_bytes(ds)


def multiframe_instance(spec: StudySpec, megabytes: float, series_number: int = 90,
                        index: int = 0, rows: int = 512, cols: int = 512, seed: int = 0) -> bytes:
    """One multi-frame 16-bit instance of about ``megabytes`` MB."""
    series_uid = _uid("mf-series", spec.study_uid, series_number)
    frames = max(1, int(megabytes * 1024 * 1024 / (rows * cols * 2)))
    rnd = random.Random(seed + index)
    sop_uid = _uid("mf", series_uid, index)
    ds = _base_dataset(spec, MULTIFRAME_GRAYSCALE_WORD_SC, sop_uid, series_uid, "OT", series_number,
                       index + 1, "Cine loop")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    chunks = [_phantom_slice(rows, cols, 0.5, rnd, shift=f * 3) for f in range(frames)]
    ds.PixelData = b"".join(chunks)
    return _to_bytes(ds)


def sample_collection(seed: int = 1, studies: int = 3, ct_slices: int = 20,
                      tiny: int = 10, multiframe_mb: Optional[float] = None) -> List[bytes]:
    """A small mixed collection for the demo and tests."""
    out: List[bytes] = []
    descriptions = ["CT CHEST", "CT ABDOMEN", "CT HEAD", "CT PELVIS"]
    for s in range(studies):
        spec = make_study_spec(seed * 100 + s, descriptions[s % len(descriptions)])
        out.extend(ct_series(spec, ct_slices, seed=seed * 100 + s, rows=256 if ct_slices > 60 else 512,
                             cols=256 if ct_slices > 60 else 512))
        if tiny:
            out.extend(tiny_instances(spec, tiny, seed=s))
        if multiframe_mb:
            out.append(multiframe_instance(spec, multiframe_mb, seed=s))
    return out
