"""Finding the image files: the data folder's layout, file tables, and what file names say.

The data set comes in the layout of the Kaggle download::

    <data_dir>/{train,val,test}/{NORMAL,PNEUMONIA}/<image files>

as people repackage it: ``val/`` may be missing or empty (its 16 images are often dropped or
merged into ``train/``; see :data:`REQUIRED_SPLITS`), and class folders may be named in any
case (``normal/``, ``Pneumonia/``), as file extensions may. Paths in file tables keep the
folder names found on disk.

A *file table* has one row per image (``path`` relative to the data folder, with ``/``,
``label``, ``group``) and is sorted by path, so that every pass over a split sees the images
in the same order. Nothing here decodes an image.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from helpers import config
from helpers.data.cache import files_fingerprint
from helpers.data.dicom import (
    dicom_header_summary,
    is_dicom_name,
    person_salt,
    person_salt_file,
    with_person_identity,
)
from helpers.data.errors import DataError

#: Files that operating systems and archives leave beside images; never images, never errors.
_IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})

_PERSON = re.compile(r"^person(\d+)_", re.IGNORECASE)
# NORMAL files are named IM-<study>-<image>[...] or NORMAL2-IM-<study>-<image>; images that
# share the study number come from one examination, so we keep them together as well.
_STUDY = re.compile(r"^((?:NORMAL2-)?IM-\d+)", re.IGNORECASE)

#: How deep :func:`find_layout_root` looks below the folder it is given.
_LAYOUT_SEARCH_DEPTH = 3

#: Split folders every data folder must hold. ``val/`` is optional: the book makes its
#: validation set from ``train/`` by person and only adds the official validation images to
#: it (:func:`helpers.data.split_table`), so a copy without them loses nothing else.
REQUIRED_SPLITS: tuple[str, str] = ("train", "test")

_EXPECTED_LAYOUT = (
    "train/ and test/ (and, optionally, val/), each holding NORMAL/ and PNEUMONIA/ "
    "(folder names in any case)"
)


def check_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder as an absolute path after checking its layout.

    The folder may be the one holding ``train/``, ``val/`` and ``test/``, or a folder above
    it: the Kaggle archive unpacks to ``chest_xray/chest_xray/{train,val,test}`` beside a
    ``__MACOSX/`` copy of resource forks, and people point at either level. The folder
    actually used is returned (see :func:`find_layout_root`). ``val/`` may be missing or
    hold no image (see :data:`REQUIRED_SPLITS`); class folders match NORMAL and PNEUMONIA
    in any case (see :func:`class_folders`).

    Parameters
    ----------
    data_dir : path-like or None
        Folder holding ``train/``, ``test/`` and optionally ``val/`` (or a folder above
        it); None means the embedded copy (:data:`helpers.config.DEFAULT_DATA_DIR`).

    Returns
    -------
    pathlib.Path
        The folder holding the split folders, resolved.

    Raises
    ------
    DataError
        If the folder, ``train/``, ``test/`` or a class folder is missing, if a split holds
        class folders other than NORMAL and PNEUMONIA (in any case) or two that differ only
        in case, or if a class folder holds no image (a ``val/`` that holds no image at all
        is accepted).
    """
    given = Path(config.DEFAULT_DATA_DIR if data_dir is None else data_dir).expanduser()
    if not given.is_dir():
        raise DataError(
            f"data folder {given} does not exist or is not a folder; expected a folder with "
            f"{_EXPECTED_LAYOUT}"
        )
    root = given
    if not any((given / split).is_dir() for split in config.OFFICIAL_SPLITS):
        # No split folder at all here: the user may have pointed at the archive's top.
        try:
            root = find_layout_root(given)
        except DataError:
            pass  # fall through to the precise "split folder missing" message below
    for split in config.OFFICIAL_SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            if split not in REQUIRED_SPLITS:
                continue  # no official validation images: the split says so
            raise DataError(
                f"split folder {split_dir} is missing; expected {root} (or a folder under "
                f"it, up to {_LAYOUT_SEARCH_DEPTH} levels down) to hold "
                f"{', '.join(s + '/' for s in REQUIRED_SPLITS)} (and, optionally, val/)"
            )
        found = _class_folders_found(split_dir)
        images = {name: _holds_images(folder) for name, folder in found.items()}
        if split not in REQUIRED_SPLITS and not any(images.values()):
            continue  # an empty val/ is a missing one
        for class_name in config.CLASS_NAMES:
            if class_name not in found:
                raise DataError(
                    f"class folder {split_dir / class_name} is missing (its name may be in "
                    f"any case)"
                )
            if not images[class_name]:
                raise DataError(
                    f"class folder {found[class_name]} holds no image files (expected "
                    f"{', '.join(sorted(config.IMAGE_EXTENSIONS))}, in any case)"
                )
    return root.resolve()


def _class_folders_found(split_dir: Path) -> dict[str, Path]:
    """The class folders of one split folder, by class name; refuses unknown and twin names."""
    found = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unexpected = [p.name for p in found if p.name.upper() not in config.CLASS_NAMES]
    if unexpected:
        raise DataError(
            f"{split_dir} holds class folders {unexpected}; expected only "
            f"{list(config.CLASS_NAMES)} (in any case)"
        )
    by_class: dict[str, Path] = {}
    for folder in found:
        twin = by_class.setdefault(folder.name.upper(), folder)
        if twin is not folder:
            raise DataError(
                f"{split_dir} holds class folders {twin.name!r} and {folder.name!r}, which "
                f"differ only in case; expected one folder per class, so merge them into one"
            )
    return by_class


def _holds_images(folder: Path) -> bool:
    return any(_is_image_name(p.name) for p in folder.iterdir() if p.is_file())


def class_folders(data_dir: str | os.PathLike | None, split: str) -> dict[str, Path]:
    """The class folders of one official split, as named on disk, in label order.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (checked with :func:`check_data_dir`).
    split : {"train", "val", "test"}
        An official split folder.

    Returns
    -------
    dict of str to pathlib.Path
        ``{"NORMAL": <folder>, "PNEUMONIA": <folder>}``, each folder named as on disk
        (``normal/`` stays ``normal/``); empty for a ``val/`` that is missing or holds no
        image.

    Raises
    ------
    ValueError
        If ``split`` is not an official split name.
    DataError
        If the data folder's layout is wrong (see :func:`check_data_dir`).
    """
    if split not in config.OFFICIAL_SPLITS:
        raise ValueError(f"split must be one of {config.OFFICIAL_SPLITS}, got {split!r}")
    root = check_data_dir(data_dir)
    if not (root / split).is_dir():
        return {}
    found = _class_folders_found(root / split)
    if not any(_holds_images(folder) for folder in found.values()):
        return {}
    return {name: found[name] for name in config.CLASS_NAMES}


def _is_skipped_folder(name: str) -> bool:
    """Folders never entered: hidden ones and the ``__MACOSX`` copies archives leave."""
    return name == "__MACOSX" or name.startswith(".")


def image_files_below(folder: str | os.PathLike) -> list[Path]:
    """Every image file below ``folder``, at any depth, sorted by path.

    The loader's rules: an image file has an extension of
    :data:`helpers.config.IMAGE_EXTENSIONS` in any case (``.dcm`` and ``.dicom`` are DICOM);
    hidden files, the files operating systems leave beside images (``.DS_Store``,
    ``Thumbs.db``, ``desktop.ini``), hidden folders and ``__MACOSX`` folders are skipped.
    Nothing is opened: a file named like an image may still fail to decode.

    Parameters
    ----------
    folder : path-like
        The folder to search (its own name may start with a dot).

    Returns
    -------
    list of pathlib.Path
        ``folder / <relative path>`` of each image file, sorted by the relative path with
        ``/``; empty when the folder holds no image file.

    Raises
    ------
    DataError
        If ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"folder {folder} does not exist or is not a folder; expected a folder of image "
            f"files ({', '.join(sorted(config.IMAGE_EXTENSIONS))}, in any case, at any depth)"
        )
    found = []
    for current, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not _is_skipped_folder(name)]
        found.extend(Path(current, name) for name in files if _is_image_name(name))
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def _is_image_name(name: str) -> bool:
    if name.startswith(".") or name.lower() in _IGNORED_NAMES:
        return False
    return Path(name).suffix.lower() in config.IMAGE_EXTENSIONS


def group_id(filename: str) -> str:
    """The person (or examination) an image belongs to, read from its file name.

    ``person1003_bacteria_2934.jpeg`` -> ``"person1003"``;
    ``IM-0115-0001.jpeg`` -> ``"IM-0115"``; ``NORMAL2-IM-1427-0001.jpeg`` ->
    ``"NORMAL2-IM-1427"``. Any other name is its own group (its stem).

    Examples
    --------
    >>> group_id("person12_virus_45.jpeg")
    'person12'
    >>> group_id("IM-0011-0001-0002.jpeg")
    'IM-0011'
    """
    name = Path(filename).name
    match = _PERSON.match(name)
    if match:
        return f"person{int(match.group(1))}"
    match = _STUDY.match(name)
    if match:
        return match.group(1).upper()
    return Path(name).stem


def pneumonia_kind(filename: str) -> str:
    """``"bacteria"``, ``"virus"`` or ``""`` (NORMAL images), from the file name.

    Examples
    --------
    >>> pneumonia_kind("person1_virus_7.jpeg"), pneumonia_kind("IM-0001-0001.jpeg")
    ('virus', '')
    """
    name = Path(filename).name.lower()
    for kind in ("bacteria", "virus"):
        if f"_{kind}" in name:
            return kind
    return ""


def list_split(data_dir: str | os.PathLike | None, split: str) -> pd.DataFrame:
    """File table of one official split folder, sorted by path (empty for a missing ``val/``).

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (checked with :func:`check_data_dir`).
    split : {"train", "val", "test"}
        An official split folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``path`` (relative to ``data_dir``, with ``/``, class folders named as on
        disk), ``label`` (0 NORMAL, 1 PNEUMONIA), ``group`` (see :func:`group_id`; for a
        DICOM file with a PatientID, a salted key of it, see
        ``helpers.data.dicom.with_person_identity``) and ``identity`` (where the group
        came from: ``"file name"`` or ``"PatientID"``). No rows when ``split`` is ``"val"``
        and ``val/`` is missing or holds no image.

    Raises
    ------
    ValueError
        If ``split`` is not an official split name.
    DataError
        If the data folder's layout is wrong (see :func:`check_data_dir`).
    """
    root = check_data_dir(data_dir)
    folders = class_folders(root, split)
    rows = []
    for label, folder in enumerate(folders.values()):
        for entry in folder.iterdir():
            if entry.is_file() and _is_image_name(entry.name):
                rows.append((f"{split}/{folder.name}/{entry.name}", label, group_id(entry.name)))
    table = pd.DataFrame(rows, columns=["path", "label", "group"])
    # A DICOM file's person is its PatientID (as a salted key), whatever its file name.
    table = with_person_identity(root, table)
    return table.sort_values("path", ignore_index=True)


def test_persons(data_dir: str | os.PathLike | None, paths) -> list[str]:
    """The person of each test image, as the person-aware statistics group them.

    A test prediction file (``predictions_test.csv``) names its images by path; the person
    of an image is not always in that path: a DICOM file's person is its ``PatientID``
    (as a salted key, see :func:`list_split`), whatever the file is called. This reads the
    ``group`` column of the test split's file table.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder the predictions were made on (None: the embedded copy).
    paths : sequence of str
        Test image paths as :func:`list_split` gives them (``test/<class folder>/<file>``),
        as ``predictions_test.csv`` holds them.

    Returns
    -------
    list of str
        The person (group) of each path, in the order given. For a file whose person comes
        from its name, :func:`group_id` of the name.

    Raises
    ------
    ValueError
        If a path is not an image of the folder's test split, naming the first few such
        paths and the folder.
    DataError
        If the data folder's layout is wrong (see :func:`check_data_dir`).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError(f"paths must be a sequence of test image paths, got one path {paths!r}")
    paths = [str(path) for path in paths]
    table = list_split(data_dir, "test")
    person_of = dict(zip(table["path"], table["group"]))
    missing = [path for path in paths if path not in person_of]
    if missing:
        root = check_data_dir(data_dir)
        shown = ", ".join(repr(path) for path in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(
            f"{len(missing)} of {len(paths)} paths are not test images of {root} "
            f"(expected paths such as 'test/NORMAL/<file>' from its test/ folder): {shown}{more}"
        )
    return [person_of[path] for path in paths]


# Its name starts with "test": a test module that imports it must not have pytest collect it.
test_persons.__test__ = False


def download_kaggle() -> Path:
    """Download the original Kaggle data set and return its ``chest_xray`` folder.

    Uses ``kagglehub`` (dataset ``paultimothymooney/chest-xray-pneumonia``, about 1.2 GB,
    full-resolution images). Runs only when called, never on import. Pass the returned
    folder as ``data_dir`` (notebooks) or ``--data-dir`` (the runner).

    Raises
    ------
    RuntimeError
        If the download fails (for example with no network), with the reason.
    """
    try:
        import kagglehub
    except ImportError as error:  # pragma: no cover - kagglehub is in requirements.txt
        raise RuntimeError("download_kaggle needs kagglehub: pip install kagglehub") from error
    try:
        root = Path(kagglehub.dataset_download("paultimothymooney/chest-xray-pneumonia"))
    except Exception as error:  # kagglehub raises many types; the message is what matters
        raise RuntimeError(
            "could not download the Kaggle data set paultimothymooney/chest-xray-pneumonia "
            f"(are you online?): {type(error).__name__}: {error}. The embedded copy in "
            f"{config.DEFAULT_DATA_DIR} needs no download."
        ) from error
    return find_layout_root(root)


def find_layout_root(folder: str | os.PathLike) -> Path:
    """The folder under ``folder`` that holds ``train/`` and ``test/`` (the archive nests it).

    The Kaggle archive unpacks to ``chest_xray/chest_xray/{train,val,test}`` beside a
    ``__MACOSX`` copy; this returns the first folder, breadth first and at most
    three levels down, holding ``train/`` and ``test/`` (``val/`` is optional, see
    :data:`REQUIRED_SPLITS`). ``__MACOSX`` and hidden folders are never
    entered.

    Parameters
    ----------
    folder : path-like
        Where to start looking.

    Returns
    -------
    pathlib.Path
        ``folder`` itself or the folder below it that holds the split folders.

    Raises
    ------
    DataError
        If no such folder exists.
    """
    folder = Path(folder)
    queue = [(folder, 0)]
    while queue:
        current, depth = queue.pop(0)
        if all((current / s).is_dir() for s in REQUIRED_SPLITS):
            return current
        if depth < _LAYOUT_SEARCH_DEPTH:
            queue.extend(
                (p, depth + 1)
                for p in sorted(current.iterdir())
                if p.is_dir() and not _is_skipped_folder(p.name)
            )
    raise DataError(
        f"no folder holding train/ and test/ found in {folder} or up to "
        f"{_LAYOUT_SEARCH_DEPTH} levels below it"
    )


def describe_files(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Size, mode and format of every image file, read from the headers (no decoding).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``split`` (official folder), ``label``, ``path``, ``width``,
        ``height``, ``mode``, ``format``, ``bytes``.

    Raises
    ------
    DataError
        If the folder's layout is wrong or a file's header cannot be read, naming the file.
    """
    from PIL import Image

    root = check_data_dir(data_dir)
    rows = []
    for split in config.OFFICIAL_SPLITS:
        for path, label in list_split(root, split)[["path", "label"]].itertuples(index=False):
            file = root / path
            if is_dicom_name(file):
                rows.append((split, label, path, *dicom_header_summary(file), file.stat().st_size))
                continue
            try:
                with Image.open(file) as img:
                    rows.append(
                        (
                            split,
                            label,
                            path,
                            img.width,
                            img.height,
                            img.mode,
                            img.format,
                            file.stat().st_size,
                        )
                    )
            except OSError as error:
                raise DataError(f"{file} is not a readable image: {error}") from None
    return pd.DataFrame(
        rows, columns=["split", "label", "path", "width", "height", "mode", "format", "bytes"]
    )


def data_fingerprint(data_dir: str | os.PathLike | None = None, *, make_salt: bool = False) -> str:
    """SHA-256 of a data folder's image files: relative paths, sizes and modification times.

    Cheap (no image is read) and changes when a file is added, removed, renamed or
    rewritten. A folder holding a DICOM file also depends on the person salt, since its
    persons, and so its split, do (``helpers.data.dicom.person_salt``): then the salt's
    SHA-256 is part of the fingerprint, never the salt itself.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (None: the embedded copy).
    make_salt : bool, default False
        For a folder holding a DICOM file, make the salt if it does not exist yet (as the
        first chapter to list the folder will). The runner does, so that a build's record
        holds the salt its chapters used: with the salt's absence fingerprinted instead,
        the next build would find the folder changed and run every chapter again. False
        creates nothing and fingerprints the absence.

    Returns
    -------
    str
        64 hexadecimal digits, or ``"invalid: <reason>"`` for a folder that is not a valid
        data folder.
    """
    try:
        root = check_data_dir(data_dir)
    except DataError as error:
        return f"invalid: {error}"
    entries = []
    for split in config.OFFICIAL_SPLITS:
        for folder in class_folders(root, split).values():
            for entry in os.scandir(folder):
                if entry.is_file() and _is_image_name(entry.name):
                    stat = entry.stat()
                    entries.append(
                        (f"{split}/{folder.name}/{entry.name}", stat.st_size, stat.st_mtime_ns)
                    )
    entries.sort()
    if any(is_dicom_name(name) for name, _, _ in entries):
        if make_salt:
            person_salt()
        # A pair, where every file gives a triple: no file can be mistaken for the salt.
        entries.append(("person salt", _person_salt_fingerprint()))
    return files_fingerprint(entries)


def _person_salt_fingerprint() -> str:
    """The salt's SHA-256 (never the salt), or ``"no salt yet"``; creates no salt file."""
    import hashlib

    try:
        return f"salt sha256 {hashlib.sha256(person_salt_file().read_bytes()).hexdigest()}"
    except FileNotFoundError:
        return "no salt yet"


def duplicate_groups(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Groups of byte-identical image files: one row per file that has a twin.

    Returns
    -------
    pandas.DataFrame
        Columns ``sha1``, ``path``, ``split`` (official folder), ``label``; sorted by
        ``sha1``, then ``path``. Empty when no two files are identical.
    """
    import hashlib

    root = check_data_dir(data_dir)
    rows = []
    for split in config.OFFICIAL_SPLITS:
        for path, label in list_split(root, split)[["path", "label"]].itertuples(index=False):
            digest = hashlib.sha1((root / path).read_bytes()).hexdigest()
            rows.append((digest, path, split, label))
    frame = pd.DataFrame(rows, columns=["sha1", "path", "split", "label"])
    return frame[frame.duplicated("sha1", keep=False)].sort_values(
        ["sha1", "path"], ignore_index=True
    )
