"""A Kaggle-layout folder turned into DICOM files, the person only in ``PatientID``.

Used by the tests, and from the command line to make a DICOM copy of the embedded data::

    python tests/dicom_folder.py data/chest_xray /tmp/dicom_xray

Each image becomes ``<split>/<class>/<random hex>.dcm`` (the file name says nothing about the
person), made with :func:`helpers.data.dicom.xray_to_dicom` from the image's 8-bit grayscale
pixels at full size. The files vary the way a hospital's export does, in a fixed rotation:
MONOCHROME2 and MONOCHROME1, 12 and 16 stored bits, with and without a rescale, every
fifth file RLE Lossless compressed. Every window covers the stored range, so each file
decodes to its source picture. ``PatientID`` is a made-up hospital number, one per person of
the file names (:func:`helpers.data.group_id`); ``PatientName``, ``PatientBirthDate``,
``StudyDate``, ``AccessionNumber`` and ``InstitutionName`` are filled with made-up values too,
so that a test can search everything a run writes for them (:data:`HEADER_FIELDS`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from helpers import config  # noqa: E402
from helpers.data import group_id  # noqa: E402
from helpers.data.dicom import xray_to_dicom  # noqa: E402

#: The personal header fields the copies carry (all made up), which nothing may write out.
HEADER_FIELDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyDate",
    "AccessionNumber",
    "InstitutionName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)

#: The rotation of storage variants: (bits_stored, photometric, stored_range, rescale).
VARIANTS = (
    (12, "MONOCHROME2", None, None),
    (16, "MONOCHROME1", (1000, 60000), (0.5, -1024.0)),
    (12, "MONOCHROME1", (100, 4000), (1.0, -1024.0)),
    (16, "MONOCHROME2", None, (1.0, 0.0)),
)


def person_header(person: str, number: int) -> dict[str, str]:
    """Made-up personal header fields for one person (``number`` makes them unique)."""
    return {
        "PatientID": f"HOSP{7_310_000 + number:08d}",
        "PatientName": f"Testperson^Kid{number:05d}",
        "PatientBirthDate": f"2015{1 + number % 12:02d}{1 + number % 28:02d}",
        "PatientSex": "O",
        "StudyDate": f"2021{1 + number % 12:02d}{1 + (number * 7) % 28:02d}",
        "AccessionNumber": f"ACC{9_000_000 + number}",
        "InstitutionName": "Saint Nowhere Childrens Hospital",
    }


def convert_folder(
    source: str | Path,
    target: str | Path,
    *,
    seed: int = 0,
    keep_original: frozenset[str] = frozenset(),
) -> dict[str, dict[str, str]]:
    """Write a DICOM copy of the Kaggle-layout folder ``source`` into ``target``.

    Parameters
    ----------
    source, target : path-like
        The image folder and the folder to write (made if missing).
    seed : int
        Fixes the file names.
    keep_original : set of str
        Paths (relative to ``source``) copied unchanged instead, for a mixed folder.

    Returns
    -------
    dict
        ``{path in target: header fields}`` of every DICOM file written.
    """
    import shutil

    from PIL import Image
    from pydicom.uid import RLELossless

    source, target = Path(source), Path(target)
    rng = np.random.default_rng(seed)
    numbers: dict[str, int] = {}
    written: dict[str, dict[str, str]] = {}
    files = sorted(
        p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in config.IMAGE_EXTENSIONS
    )
    for i, path in enumerate(files):
        relative = path.relative_to(source)
        out_dir = target / relative.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        if relative.as_posix() in keep_original:
            shutil.copy2(path, out_dir / relative.name)
            continue
        person = group_id(path.name)
        number = numbers.setdefault(person, len(numbers) + 1)
        header = person_header(person, number)
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"))
        bits, photometric, stored_range, rescale = VARIANTS[i % len(VARIANTS)]
        ds = xray_to_dicom(
            pixels,
            bits_stored=bits,
            photometric=photometric,
            stored_range=stored_range,
            rescale=rescale,
            patient=header,
        )
        if i % 5 == 0:
            ds.compress(RLELossless)
        name = f"{rng.bytes(12).hex()}.dcm"
        ds.save_as(out_dir / name, enforce_file_format=True)
        header = dict(header)
        for field in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            header[field] = str(ds[field].value)
        written[(relative.parent / name).as_posix()] = header
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="Kaggle-layout image folder")
    parser.add_argument("target", type=Path, help="folder to write the DICOM copy into")
    parser.add_argument("--seed", type=int, default=0, help="fixes the file names")
    args = parser.parse_args(argv)
    if args.target.exists() and any(args.target.iterdir()):
        parser.error(f"{args.target} is not empty; choose a new folder")
    written = convert_folder(args.source, args.target, seed=args.seed)
    print(f"wrote {len(written)} DICOM files into {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
