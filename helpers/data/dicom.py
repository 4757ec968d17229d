"""DICOM files: the rule that turns their pixels into the book's images; the person in PatientID.

A chest X-ray exported from a PACS or a modality is a DICOM file, not a JPEG. Its pixels are
*stored values* (10 to 16 bits, signed or not) that mean something only after two lookups
the header describes: the modality LUT (``RescaleSlope``/``RescaleIntercept``, or a LUT) and
the VOI LUT or window (``WindowCenter``/``WindowWidth``, often several, the first being the
one the modality suggests). ``PhotometricInterpretation`` ``MONOCHROME1`` means that the
smallest value is white (bone dark, air bright once shown as usual). :func:`dicom_to_8bit`
is the one rule the book applies (see :func:`helpers.data.decode_image`, which calls it for
``.dcm`` files); :func:`dicom_rule_steps` shows its steps.

The person is in ``PatientID``, not in the file name. :func:`with_person_identity` groups
DICOM files by a salted hash of it (:func:`person_key`) and never keeps the ID itself.

Importing this module does not import pydicom; the functions do, when called.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.data.errors import DataError

#: File extensions read as DICOM (compared case-insensitively); also in
#: :data:`helpers.config.IMAGE_EXTENSIONS`.
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})

#: Bumped whenever :func:`dicom_to_8bit` changes what it returns; part of the decoded-image
#: cache's key for DICOM files (with the versions of the decoders, see
#: :func:`dicom_decoder_versions`).
DICOM_RULE_VERSION = 1

#: Environment variable naming the file that holds the salt of :func:`person_key`.
PERSON_SALT_FILE_VARIABLE = "CHEST_XRAY_PERSON_SALT_FILE"

#: Where the salt of :func:`person_key` is kept unless ``$CHEST_XRAY_PERSON_SALT_FILE`` says
#: otherwise: beside the build's caches, never in ``results/``.
DEFAULT_PERSON_SALT_FILE = config.REPO_ROOT / "_build" / "person-salt"

#: What the ``identity`` column of a file table says about where a row's ``group`` came from.
IDENTITY_PATIENT_ID = "PatientID"
IDENTITY_FILE_NAME = "file name"

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

# Person keys per file identity (path, size, modification time, salt): the split, the data
# chapter's tables and the leak check all list the same folder, and read each header once.
_PERSON_KEYS: dict[tuple, str | None] = {}
_PERSON_KEYS_LOCK = threading.Lock()


def _pydicom():
    """pydicom, set not to validate values while reading: a header value that does not fit
    its type (a malformed birth date) would otherwise be quoted in a warning, and so reach a
    log or a page. Values are never used here beyond PatientID, which is hashed."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    return pydicom


def is_dicom_name(path: str | os.PathLike) -> bool:
    """True when the file's extension is a DICOM one (``.dcm``, ``.dicom``, in any case).

    Examples
    --------
    >>> is_dicom_name("scan.DCM"), is_dicom_name("scan.jpeg")
    (True, False)
    """
    return Path(path).suffix.lower() in DICOM_EXTENSIONS


def dicom_decoder_versions() -> tuple[str, ...]:
    """Versions of the libraries that decode DICOM pixel data (pydicom and the pylibjpeg
    plugins), ``"name=version"`` or ``"name=absent"``; part of the decoded-image cache's key,
    since another decoder may decode a lossy file to other values."""
    from importlib import metadata

    versions = []
    for name in ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pillow"):
        try:
            versions.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}=absent")
    return (f"dicom-rule-v{DICOM_RULE_VERSION}", *versions)


def read_dicom(path: str | os.PathLike):
    """Read a DICOM file (Part 10, with its preamble) and check the rule can take its pixels.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    pydicom.Dataset
        The dataset, pixel data not yet decoded.

    Raises
    ------
    DataError
        Naming the file and the reason: missing; not a DICOM file; corrupt or truncated
        header; no pixel data; several frames; colour or another photometric interpretation
        than MONOCHROME1/MONOCHROME2; a transfer syntax no installed decoder reads.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except InvalidDicomError:
        raise DataError(
            f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
        ) from None
    except Exception as error:  # pydicom raises many types on a damaged header
        raise DataError(
            f"{path} is a corrupt or truncated DICOM file: {type(error).__name__}: {error}"
        ) from None
    check_dicom(ds, name=str(path))
    return ds


def check_dicom(ds, *, name: str) -> None:
    """Refuse a dataset :func:`dicom_to_8bit` cannot take, naming ``name`` and the reason.

    Raises
    ------
    DataError
        If it has no pixel data, several frames, colour or another photometric
        interpretation than MONOCHROME1/MONOCHROME2, or a transfer syntax that no installed
        decoder reads.
    """
    from pydicom.pixels import get_decoder

    if "PixelData" not in ds:
        raise DataError(
            f"{name} holds no pixel data (a DICOM file without an image, such as a report)"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(f"{name} is multi-frame ({frames} frames); only single images are read")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in _MONOCHROME:
        raise DataError(
            f"{name} is a colour image or has another PhotometricInterpretation "
            f"({photometric or 'missing'}, {samples} sample(s) per pixel); only MONOCHROME1 and "
            "MONOCHROME2 grayscale X-rays are read"
        )
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None:
        raise DataError(f"{name} has no transfer syntax in its file meta information")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DataError(
            f"{name} uses transfer syntax {syntax.name} ({syntax}), which pydicom cannot decode"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "none known"
        raise DataError(
            f"{name} uses transfer syntax {syntax.name} ({syntax}), for which no decoder is "
            f"installed (plugins and what they need: {missing})"
        )


def dicom_rule_steps(ds, *, name: str = "DICOM dataset") -> dict[str, np.ndarray]:
    """The conversion rule for DICOM, step by step, each step as an 8-bit picture.

    1. ``"stored values"``: the pixel data as stored, shown the way a reader that knows
       nothing of DICOM shows 16-bit grayscale (scaled by the type's range, 0-65535): dark.
    2. ``"modality LUT, then window"``: pydicom's :func:`~pydicom.pixels.apply_modality_lut`
       (rescale slope and intercept, or the LUT), then :func:`~pydicom.pixels.apply_voi_lut`
       with ``index=0`` (the VOI LUT if the file has one, else its first window), mapped
       linearly from the VOI step's output range to 0-255. The output range is what the VOI
       step gives the lowest and highest possible values (the window's or the LUT's ends).
       A file with neither VOI LUT nor window has its own darkest to brightest value mapped
       to 0-255.
    3. ``"MONOCHROME1 inverted"``: ``255 - value`` when the photometric interpretation is
       MONOCHROME1, so that air is dark as in every other image of the book; unchanged for
       MONOCHROME2. This is the rule's output (:func:`dicom_to_8bit`).

    Parameters
    ----------
    ds : pydicom.Dataset
        A single-frame MONOCHROME1 or MONOCHROME2 dataset (checked with
        ``check_dicom``).
    name : str
        How errors name the dataset (its file's path).

    Returns
    -------
    dict of str to numpy.ndarray of uint8, shape (rows, columns)
        The three steps, in order.

    Raises
    ------
    DataError
        If the dataset cannot be taken (see ``check_dicom``) or its pixel data cannot be
        decoded (truncated, corrupt), naming ``name``.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    check_dicom(ds, name=name)
    try:
        stored = ds.pixel_array
        modality = apply_modality_lut(stored, ds)
        windowed = apply_voi_lut(modality, ds, index=0)
        lowest, highest = _voi_output_range(ds, modality, windowed)
    except DataError:
        raise
    except Exception as error:  # decoders raise many types on damaged pixel data
        raise DataError(
            f"{name} has pixel data that cannot be decoded (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from None
    if stored.ndim != 2:
        raise DataError(f"{name} decodes to an array of shape {stored.shape}, not one image")
    as_16_bit = np.clip(stored.astype(np.float64), 0, 65535) / 65535 * 255
    presented = _to_uint8(windowed, lowest, highest)
    final = 255 - presented if ds.PhotometricInterpretation == "MONOCHROME1" else presented
    return {
        "stored values": np.rint(as_16_bit).astype(np.uint8),
        "modality LUT, then window": presented,
        "MONOCHROME1 inverted": final,
    }


def dicom_to_8bit(path: str | os.PathLike) -> np.ndarray:
    """Read a DICOM file and convert its pixels to 8-bit grayscale by the book's rule.

    The rule is :func:`dicom_rule_steps`' (modality LUT, VOI LUT or first window,
    MONOCHROME1 inverted, to 0-255); :func:`helpers.data.decode_image` then converts the
    result to the colour mode and size wanted, as it does a grayscale JPEG.

    Parameters
    ----------
    path : path-like
        A DICOM file.

    Returns
    -------
    numpy.ndarray of uint8, shape (rows, columns)

    Raises
    ------
    DataError
        Naming the file and the reason, if it is missing, not DICOM, corrupt or truncated,
        has no pixel data, several frames, colour, or a transfer syntax no installed decoder
        reads.
    """
    ds = read_dicom(path)
    return dicom_rule_steps(ds, name=str(path))["MONOCHROME1 inverted"]


def _voi_output_range(ds, modality: np.ndarray, windowed: np.ndarray) -> tuple[float, float]:
    """The lowest and highest value the VOI step can give: what it gives the extremes."""
    from pydicom.pixels import apply_voi_lut

    has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds or "WindowWidth" in ds
    if not has_voi:
        return float(np.min(windowed)), float(np.max(windowed))
    probe = np.array([np.min(modality) - 1e9, np.max(modality) + 1e9])
    if np.issubdtype(modality.dtype, np.integer):
        probe = probe.astype(np.int64)
    with np.errstate(over="ignore"):
        ends = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _to_uint8(values: np.ndarray, lowest: float, highest: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if highest <= lowest:  # a flat image
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - lowest) / (highest - lowest) * 255
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def dicom_header_summary(path: str | os.PathLike) -> tuple[int, int, str, str]:
    """Width, height, mode and format of a DICOM file, from its header (no pixel decoding).

    ``mode`` is the photometric interpretation with the stored bits
    (``"MONOCHROME1 12-bit"``); ``format`` is ``"DICOM"`` with the transfer syntax's name.
    No personal field is read into the result.

    Raises
    ------
    DataError
        If the file is not a DICOM file or its header is unreadable, naming it.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise DataError(f"{path} is not a DICOM file (no 'DICM' marker)") from None
    except Exception as error:
        raise DataError(f"{path} is not a readable DICOM file: {error}") from None
    photometric = str(ds.get("PhotometricInterpretation", "?"))
    bits = ds.get("BitsStored", "?")
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    kind = f"DICOM {syntax.name}" if syntax is not None else "DICOM"
    return int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), f"{photometric} {bits}-bit", kind


def person_salt_file() -> Path:
    """The salt's file: ``$CHEST_XRAY_PERSON_SALT_FILE``, else ``_build/person-salt``."""
    return Path(os.environ.get(PERSON_SALT_FILE_VARIABLE) or DEFAULT_PERSON_SALT_FILE)


def person_salt() -> bytes:
    """The secret salt of :func:`person_key`, made once per machine (32 random bytes).

    Kept in :func:`person_salt_file`, never in ``results/``; created on first use, atomically
    (two processes starting at once agree on one salt). Deleting it gives new person keys and
    so, for DICOM folders, another validation split.

    Returns
    -------
    bytes
    """
    path = person_salt_file()
    try:
        salt = path.read_bytes()
        if len(salt) >= 16:
            return salt
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    tmp.write_bytes(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # fails if another process made it first: then its salt wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def person_key(patient_id: str, *, salt: bytes | None = None) -> str:
    """The group key of a person: ``"patient-"`` and 16 hex digits of HMAC-SHA256(salt, ID).

    The split needs to know which images belong to one person, not who the person is, so
    the ID is replaced by a key at the moment it is read and never kept. Why a salt: patient
    IDs are short and structured (a hospital's 8-digit numbers), so a plain hash could be
    reversed by hashing every possible ID and looking the key up (a dictionary attack), and
    the same person would get the same key in every data set, linking them. With a secret
    salt (``person_salt``, kept on this machine) a key can neither be traced back to an
    ID nor matched across machines. The keys are not written to any file either
    (``split.csv`` has no group column).

    Parameters
    ----------
    patient_id : str
        The DICOM ``PatientID`` (surrounding spaces ignored).
    salt : bytes, optional
        Defaults to ``person_salt``.

    Returns
    -------
    str

    Examples
    --------
    >>> person_key("12345678", salt=b"0" * 32)
    'patient-fbfc69a3d3db5ca4'
    """
    salt = person_salt() if salt is None else salt
    digest = hmac.new(salt, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"patient-{digest[:16]}"


def read_patient_id(path: str | os.PathLike) -> str | None:
    """The ``PatientID`` of a DICOM file's header, or None if it has none (empty, missing) or
    the file cannot be read as DICOM (it will fail, by name, when decoded)."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(ds.get("PatientID", "") or "").strip() or None
    except Exception:  # not DICOM or damaged: no identity here; decoding reports it
        return None


def _person_key_of_file(path: Path, salt: bytes) -> str | None:
    """:func:`person_key` of the file's PatientID (None without one), read once per file
    identity and salt; only the key is remembered, never the ID."""
    try:
        stat = path.stat()
    except OSError:
        return None
    cache_key = (str(path), stat.st_size, stat.st_mtime_ns, hashlib.sha256(salt).hexdigest())
    with _PERSON_KEYS_LOCK:
        if cache_key in _PERSON_KEYS:
            return _PERSON_KEYS[cache_key]
    patient_id = read_patient_id(path)
    key = None if patient_id is None else person_key(patient_id, salt=salt)
    with _PERSON_KEYS_LOCK:
        _PERSON_KEYS[cache_key] = key
    return key


def with_person_identity(root: str | os.PathLike, table: pd.DataFrame) -> pd.DataFrame:
    """A file table whose DICOM rows are grouped by person (``PatientID``), not file name.

    For each DICOM file with a ``PatientID``, ``group`` becomes :func:`person_key` of it and
    ``identity`` is ``"PatientID"``; every other row keeps the group read from its file name
    (:func:`helpers.data.group_id`) and ``identity`` is ``"file name"``, DICOM files without
    a PatientID included.

    Parameters
    ----------
    root : path-like
        The data folder the table's paths are relative to.
    table : pandas.DataFrame
        A file table with columns ``path`` and ``group``.

    Returns
    -------
    pandas.DataFrame
        A copy with ``group`` replaced where a PatientID exists, and a column ``identity``.
    """
    table = table.copy()
    identity = [IDENTITY_FILE_NAME] * len(table)
    groups = table["group"].tolist()
    salt = None
    for i, path in enumerate(table["path"]):
        if not is_dicom_name(path):
            continue
        salt = person_salt() if salt is None else salt
        key = _person_key_of_file(Path(root) / path, salt)
        if key is not None:
            groups[i], identity[i] = key, IDENTITY_PATIENT_ID
    table["group"] = groups
    table["identity"] = identity
    return table


def identity_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows of a file table took their person from each source.

    Returns
    -------
    dict
        ``{"PatientID": n, "file name": n, "DICOM without PatientID": n}``.
    """
    by_name = table["identity"] == IDENTITY_FILE_NAME
    dicom = table["path"].map(is_dicom_name)
    return {
        IDENTITY_PATIENT_ID: int((table["identity"] == IDENTITY_PATIENT_ID).sum()),
        IDENTITY_FILE_NAME: int(by_name.sum()),
        "DICOM without PatientID": int((by_name & dicom).sum()),
    }


def identity_sentence(table: pd.DataFrame) -> str:
    """One sentence saying where the split's persons came from, for the data chapter.

    Examples
    --------
    >>> t = pd.DataFrame({"path": ["a.dcm", "b.dcm"], "identity": ["file name", "PatientID"]})
    >>> identity_sentence(t)
    'the PatientID for 1 file and the file name for 1 file (1 DICOM file had none)'
    """
    counts = identity_counts(table)

    def files(n: int) -> str:
        return f"{n:,} file" + ("" if n == 1 else "s")

    parts = []
    if counts[IDENTITY_PATIENT_ID]:
        parts.append(f"the PatientID for {files(counts[IDENTITY_PATIENT_ID])}")
    if counts[IDENTITY_FILE_NAME]:
        parts.append(f"the file name for {files(counts[IDENTITY_FILE_NAME])}")
    sentence = " and ".join(parts) or "no file"
    if table["path"].map(is_dicom_name).any():
        n = counts["DICOM without PatientID"]
        sentence += f" ({n:,} DICOM file{'' if n == 1 else 's'} had none)"
    return sentence


#: SOP class of :func:`xray_to_dicom`'s files: Digital X-Ray Image Storage - For Presentation.
_DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def xray_to_dicom(
    pixels: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    stored_range: tuple[int, int] | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    patient: dict[str, str] | None = None,
):
    """A single-frame DICOM dataset holding an 8-bit grayscale picture as hospitals store it.

    The picture's values 0-255 are spread linearly over ``stored_range`` (reversed for
    MONOCHROME1, where the smallest value is white), stored as ``bits_stored``-bit unsigned
    integers in 16-bit words (8-bit in 8-bit words). The optional modality rescale and window
    are written to the header; by default the window covers the stored range exactly, so the
    book's rule (:func:`dicom_rule_steps`) gives back the picture up to rounding (at most one
    grey level). Uncompressed (Explicit VR Little Endian); compress it with pydicom
    (``ds.compress(pydicom.uid.RLELossless)``).

    Parameters
    ----------
    pixels : numpy.ndarray of uint8, shape (rows, columns)
        The picture (air dark, as in a JPEG X-ray).
    bits_stored : int, default 12
        8 to 16.
    photometric : {"MONOCHROME2", "MONOCHROME1"}
    stored_range : (int, int), optional
        Stored values of black and white; defaults to the full range of ``bits_stored``.
    rescale : (float, float), optional
        ``(RescaleSlope, RescaleIntercept)``; none written if omitted.
    window : (float, float), optional
        ``(lowest, highest)`` modality value of the window (``WindowCenter`` and
        ``WindowWidth`` are derived for the LINEAR function); defaults to the stored range
        after rescaling. ``False`` writes no window.
    patient : dict, optional
        Header fields to set, such as ``{"PatientID": ..., "PatientName": ...}``.

    Returns
    -------
    pydicom.Dataset
        With file meta information, ready for ``ds.save_as(path, enforce_file_format=True)``.

    Raises
    ------
    ValueError
        If ``pixels`` is not a 2-D uint8 array or an option is out of range.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 8..16, got {bits_stored!r}")
    if photometric not in _MONOCHROME:
        raise ValueError(f"photometric must be one of {_MONOCHROME}, got {photometric!r}")
    top = 2**bits_stored - 1
    low, high = (0, top) if stored_range is None else stored_range
    if not 0 <= low < high <= top:
        raise ValueError(f"stored_range must lie within 0..{top} and rise, got {stored_range!r}")
    fraction = pixels.astype(np.float64) / 255
    if photometric == "MONOCHROME1":
        fraction = 1 - fraction
    stored = np.rint(low + fraction * (high - low)).astype(np.uint8 if top == 255 else np.uint16)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _DX_FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = _DX_FOR_PRESENTATION
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    for field, value in (patient or {}).items():
        setattr(ds, field, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if top == 255 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    slope, intercept = (1.0, 0.0) if rescale is None else rescale
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.RescaleType = "US"
    if window is not False:
        lowest, highest = (low * slope + intercept, high * slope + intercept)
        if window is not None:
            lowest, highest = window
        # LINEAR (PS3.3 C.11.2.1.2.1) maps [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2]
        # onto the output range: these c and w make that exactly [lowest, highest].
        ds.WindowCenter = f"{(lowest + highest) / 2 + 0.5:.10g}"
        ds.WindowWidth = f"{highest - lowest + 1:.10g}"
    ds.PixelData = stored.tobytes()
    return ds
