"""Chest X-ray folders -> file tables, a person-aware split, and decoded images.

One module per job; every public name is importable from here
(``from helpers.data import load_chest_xrays``):

- :mod:`~helpers.data.folders`: the folder layout, file tables, what file names say, the
  image files below any folder;
- :mod:`~helpers.data.split`: the person-aware split into training, validation and test;
- :mod:`~helpers.data.decode`: one image file -> one array, by one fixed rule (and many, in
  streamed batches on threads);
- :mod:`~helpers.data.dicom`: DICOM files: the rule for their pixels, the person in PatientID;
- :mod:`~helpers.data.cache`: each image decoded once per process and once per disk;
- :mod:`~helpers.data.load`: the three splits in memory, and batches for training;
- :mod:`~helpers.data.summaries`: the data chapter's tables;
- :mod:`~helpers.data.errors`: :class:`DataError` and :class:`DataWarning`.

Importing it is cheap: no TensorFlow, no network, no file access.
"""

from helpers.data.cache import (
    CACHE_BYTES_VARIABLE,
    DEFAULT_CACHE_BYTES,
    clear_decoded_cache,
    companion_cache_dir,
    decoded_cache_bytes,
    decoded_cache_dir,
    files_fingerprint,
    load_images,
)
from helpers.data.decode import ColorMode, DecodedBatch, decode_count, decode_image, decoded_batches
from helpers.data.dicom import (
    dicom_rule_steps,
    dicom_to_8bit,
    identity_counts,
    identity_sentence,
    person_key,
    xray_to_dicom,
)
from helpers.data.errors import DataError, DataWarning
from helpers.data.folders import (
    REQUIRED_SPLITS,
    check_data_dir,
    class_folders,
    data_fingerprint,
    describe_files,
    download_kaggle,
    duplicate_groups,
    find_layout_root,
    group_id,
    image_files_below,
    list_split,
    pneumonia_kind,
    test_persons,
)
from helpers.data.load import (
    BadImagePolicy,
    ChestXrays,
    Split,
    class_weights,
    load_chest_xrays,
    persons_of,
    training_dataset,
)
from helpers.data.split import (
    image_level_split,
    official_val_note,
    person_aware_split,
    persons_on_both_sides,
    split_table,
    write_split_csv,
)
from helpers.data.summaries import (
    leakage_summary,
    official_counts,
    official_val_size_note,
    sample_indices,
    size_summary,
    split_summary,
)

__all__ = [
    "xray_to_dicom",
    "person_key",
    "persons_of",
    "identity_sentence",
    "identity_counts",
    "dicom_to_8bit",
    "dicom_rule_steps",
    "BadImagePolicy",
    "CACHE_BYTES_VARIABLE",
    "ChestXrays",
    "ColorMode",
    "DEFAULT_CACHE_BYTES",
    "DataError",
    "DataWarning",
    "REQUIRED_SPLITS",
    "Split",
    "check_data_dir",
    "class_folders",
    "class_weights",
    "clear_decoded_cache",
    "data_fingerprint",
    "companion_cache_dir",
    "decode_count",
    "DecodedBatch",
    "decoded_batches",
    "decode_image",
    "decoded_cache_bytes",
    "decoded_cache_dir",
    "describe_files",
    "download_kaggle",
    "duplicate_groups",
    "files_fingerprint",
    "find_layout_root",
    "group_id",
    "image_files_below",
    "image_level_split",
    "leakage_summary",
    "list_split",
    "load_chest_xrays",
    "load_images",
    "official_counts",
    "official_val_note",
    "official_val_size_note",
    "person_aware_split",
    "persons_on_both_sides",
    "pneumonia_kind",
    "sample_indices",
    "size_summary",
    "split_summary",
    "split_table",
    "test_persons",
    "training_dataset",
    "write_split_csv",
]
