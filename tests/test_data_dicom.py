"""DICOM in: the conversion rule on real pixels, the person from PatientID, no header value out.

The DICOM files are written with pydicom from the embedded X-rays (``data/chest_xray``):
each must decode to the same picture as its source (tolerance: at most one grey level of
255 per pixel for uncompressed and lossless files, two for JPEG baseline, decoded by
another JPEG library than Pillow's) or fail with the file's name and the reason.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")

from dicom_folder import HEADER_FIELDS, convert_folder  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.uid import (  # noqa: E402
    HTJ2K,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from helpers import config, data  # noqa: E402
from helpers.data import dicom  # noqa: E402
from helpers.data.cache import _cache_key  # noqa: E402

SOURCES = {
    "NORMAL": sorted((config.DEFAULT_DATA_DIR / "test" / "NORMAL").iterdir())[0],
    "PNEUMONIA": sorted((config.DEFAULT_DATA_DIR / "test" / "PNEUMONIA").iterdir())[0],
}
#: A pixel of a lossless or uncompressed DICOM may differ from its source by this much.
TOLERANCE = 1
HEADER = {
    "PatientID": "HOSP00424242",
    "PatientName": "Testperson^Alma",
    "PatientBirthDate": "20160229",
    "StudyDate": "20210704",
    "AccessionNumber": "ACC7777123",
    "InstitutionName": "Saint Nowhere Childrens Hospital",
}


@pytest.fixture(autouse=True)
def private_salt(tmp_path, monkeypatch):
    """Every test keys persons with its own salt, never the project's."""
    monkeypatch.setenv(dicom.PERSON_SALT_FILE_VARIABLE, str(tmp_path / "salt"))


def source_pixels(label: str) -> np.ndarray:
    with Image.open(SOURCES[label]) as img:
        return np.asarray(img.convert("L"))


def write(ds, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def decoded(path, size=224, mode="grayscale") -> np.ndarray:
    return data.decode_image(path, image_size=size, color_mode=mode)


VARIANTS = {
    "MONOCHROME2 12-bit": dict(bits_stored=12),
    "MONOCHROME1 12-bit, rescale": dict(
        bits_stored=12, photometric="MONOCHROME1", rescale=(1.0, -1024.0)
    ),
    "MONOCHROME2 16-bit, rescale and window": dict(
        bits_stored=16, stored_range=(1000, 12000), rescale=(0.5, -500.0)
    ),
    "MONOCHROME1 16-bit, rescale and window": dict(
        bits_stored=16, photometric="MONOCHROME1", stored_range=(300, 64000), rescale=(2.0, -7.0)
    ),
    "MONOCHROME2 8-bit": dict(bits_stored=8),
}


@pytest.mark.parametrize("label", sorted(SOURCES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "RLE Lossless"])
def test_each_storage_decodes_to_its_source_picture(tmp_path, label, variant, compressed):
    ds = dicom.xray_to_dicom(source_pixels(label), patient=HEADER, **VARIANTS[variant])
    if compressed:
        ds.compress(RLELossless)
    path = write(ds, tmp_path / "scan.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == (
        RLELossless if compressed else pydicom.uid.ExplicitVRLittleEndian
    )
    for size in (224, 64):  # full size, and resized as the book resizes
        got = decoded(path, size).astype(int)
        expected = decoded(SOURCES[label], size).astype(int)
        assert np.abs(got - expected).max() <= TOLERANCE
    rgb = decoded(path, 64, "rgb")
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


def _encapsulated(pixels: np.ndarray, syntax, fmt: str, **options):
    """An 8-bit DICOM whose pixel data is ``pixels`` compressed by Pillow as ``fmt``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format=fmt, **options)
    ds = dicom.xray_to_dicom(pixels, bits_stored=8)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return ds, buffer.getvalue()


def test_jpeg_baseline_dicom_decodes_like_the_same_jpeg(tmp_path):
    ds, jpeg_bytes = _encapsulated(source_pixels("PNEUMONIA"), JPEGBaseline8Bit, "JPEG", quality=90)
    jpeg = tmp_path / "same.jpeg"
    jpeg.write_bytes(jpeg_bytes)
    path = write(ds, tmp_path / "jpeg.dcm")
    assert np.abs(decoded(path).astype(int) - decoded(jpeg).astype(int)).max() <= 2


def test_jpeg_2000_lossless_dicom_decodes_to_its_source(tmp_path):
    pixels = source_pixels("NORMAL")
    ds, _ = _encapsulated(pixels, JPEG2000Lossless, "JPEG2000", irreversible=False, no_jp2=True)
    got = decoded(write(ds, tmp_path / "j2k.dcm")).astype(int)[..., 0]
    assert np.abs(got - pixels).max() <= TOLERANCE


def test_the_window_clips_and_stretches_and_the_first_of_several_is_used(tmp_path):
    pixels = source_pixels("NORMAL")
    modality = np.rint(pixels / 255 * 4095)  # 12-bit stored, no rescale
    expected = np.clip(np.rint((modality - 1000) / 2000 * 255), 0, 255)
    ds = dicom.xray_to_dicom(pixels, bits_stored=12, window=(1000, 3000))
    one = decoded(write(ds, tmp_path / "one.dcm")).astype(int)[..., 0]
    assert np.abs(one - expected).max() <= TOLERANCE
    ds.WindowCenter = [ds.WindowCenter, "400"]
    ds.WindowWidth = [ds.WindowWidth, "50"]
    several = decoded(write(ds, tmp_path / "several.dcm")).astype(int)[..., 0]
    assert np.array_equal(several, one)


def test_without_a_window_the_files_own_range_is_stretched(tmp_path):
    pixels = source_pixels("NORMAL")
    ds = dicom.xray_to_dicom(pixels, bits_stored=16, window=False)
    got = decoded(write(ds, tmp_path / "plain.dcm")).astype(int)[..., 0]
    low, high = float(pixels.min()), float(pixels.max())
    expected = np.rint((pixels - low) / (high - low) * 255)
    assert np.abs(got - expected).max() <= TOLERANCE


def test_the_rule_steps_show_raw_windowed_and_inverted(tmp_path):
    pixels = source_pixels("PNEUMONIA")
    ds = dicom.xray_to_dicom(pixels, bits_stored=12, photometric="MONOCHROME1")
    steps = data.dicom_rule_steps(ds)
    assert list(steps) == ["stored values", "modality LUT, then window", "MONOCHROME1 inverted"]
    assert steps["stored values"].max() <= 4095 / 65535 * 255 + 1  # 12 bits read as 16: dark
    assert np.abs(steps["modality LUT, then window"].astype(int) - (255 - pixels)).max() <= 1
    assert np.abs(steps["MONOCHROME1 inverted"].astype(int) - pixels).max() <= 1


def _syntax_without_decoder():
    """A transfer syntax pydicom knows but no installed plugin decodes (HTJ2K here)."""
    for syntax in (HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K):
        if not get_decoder(syntax).is_available:
            return syntax
    pytest.skip("every HTJ2K decoder is installed: no transfer syntax left without one")


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words its error must hold)."""
    pixels = source_pixels("NORMAL")
    files = {}
    ds = dicom.xray_to_dicom(pixels)
    del ds.PixelData
    files["no pixel data"] = (write(ds, folder / "nopixels.dcm"), "holds no pixel data")
    whole = write(dicom.xray_to_dicom(pixels), folder / "whole.dcm").read_bytes()
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(whole[: len(whole) // 2])
    files["truncated"] = (truncated, "truncated")
    text = folder / "notes.dcm"
    text.write_text("Findings: none. This is a text file named like a DICOM file.\n")
    files["text named .dcm"] = (text, "not a DICOM file")
    ds = dicom.xray_to_dicom(pixels)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    files["multi-frame"] = (write(ds, folder / "frames.dcm"), "multi-frame (2 frames)")
    ds = dicom.xray_to_dicom(pixels, bits_stored=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.repeat(pixels[..., None], 3, axis=-1).tobytes()
    files["colour"] = (write(ds, folder / "colour.dcm"), "colour image")
    ds = dicom.xray_to_dicom(pixels)
    ds.file_meta.TransferSyntaxUID = _syntax_without_decoder()
    ds.PixelData = encapsulate([b"\xffO\xffQ compressed bytes no installed decoder reads"])
    ds["PixelData"].VR = "OB"
    files["no decoder"] = (write(ds, folder / "jpegls.dcm"), "no decoder is installed")
    return files


@pytest.mark.parametrize(
    "case",
    ["no pixel data", "truncated", "text named .dcm", "multi-frame", "colour", "no decoder"],
)
def test_a_file_the_rule_cannot_take_stops_with_its_name_and_the_reason(tmp_path, case):
    path, words = _bad_files(tmp_path)[case]
    with pytest.raises(data.DataError) as error:
        decoded(path)
    assert str(path) in str(error.value) and words in str(error.value)


def test_bad_dicom_files_are_skipped_and_counted_like_any_bad_image(xray_folder, tmp_path):
    root = tmp_path / "chest_xray"
    convert_folder(xray_folder.root, root)
    bad = _bad_files(tmp_path / "bad")
    for path, _ in bad.values():
        (root / "train" / "NORMAL" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(data.DataError, match="train/NORMAL/"):
        data.load_chest_xrays(root, image_size=16, seed=0)
    with pytest.warns(data.DataWarning, match=f"skipped {len(bad)} unreadable"):
        xrays = data.load_chest_xrays(root, image_size=16, seed=0, on_bad_image="skip")
    assert sorted(Path(p).name for p, _ in xrays.skipped) == sorted(p.name for p, _ in bad.values())


# ---------------------------------------------------------------------------------------
# A folder of DICOM files: the split by PatientID, the cache, what is written
# ---------------------------------------------------------------------------------------


@pytest.fixture
def dicom_folder(xray_folder, tmp_path):
    """The standard small folder as DICOM files, named at random, the person in PatientID;
    one validation JPEG of each class (persons with one image) kept as it was: a mixed folder."""
    jpegs = frozenset({xray_folder.images_of("val")[0], xray_folder.images_of("val")[-1]})
    root = tmp_path / "dicom_xray"
    headers = convert_folder(xray_folder.root, root, keep_original=jpegs)
    return root, headers, jpegs


def test_a_dicom_folder_loads_like_its_source_and_splits_by_patient_id(dicom_folder, xray_folder):
    root, headers, jpegs = dicom_folder
    xrays = data.load_chest_xrays(root, image_size=32, color_mode="grayscale", seed=0)
    source = data.load_chest_xrays(xray_folder.root, image_size=32, color_mode="grayscale", seed=0)
    table = xrays.table
    assert data.identity_counts(table) == {
        "PatientID": len(headers),
        "file name": len(jpegs),
        "DICOM without PatientID": 0,
    }
    # No person on both sides, by the IDs themselves (which the table never holds).
    patient = {path: h["PatientID"] for path, h in headers.items()}
    train_folder = table[table.path.str.startswith("train/")]
    ids = [patient.get(p, data.group_id(p)) for p in train_folder.path]
    assert data.persons_on_both_sides(ids, train_folder.split == "val") == 0
    assert not set(table.group) & {h["PatientID"] for h in headers.values()}
    # The same persons as the file names of the source gave: the same number per split.
    assert (
        data.split_summary(xrays)["persons / studies"].tolist()
        == data.split_summary(source)["persons / studies"].tolist()
    )
    # The test images are the same pictures (file order differs: names are random).
    assert sorted(xrays.test.images.sum(axis=(1, 2, 3)).tolist()) == pytest.approx(
        sorted(source.test.images.sum(axis=(1, 2, 3)).tolist()), abs=32 * 32 * TOLERANCE
    )


def test_the_data_chapters_tables_read_dicom_headers(dicom_folder):
    root, headers, _ = dicom_folder
    files = data.describe_files(root)
    dcm = files[files.path.str.endswith(".dcm")]
    assert len(dcm) == len(headers)
    assert set(dcm["format"]) == {"DICOM Explicit VR Little Endian", "DICOM RLE Lossless"}
    assert set(dcm["mode"]) == {
        "MONOCHROME1 12-bit",
        "MONOCHROME1 16-bit",
        "MONOCHROME2 12-bit",
        "MONOCHROME2 16-bit",
    }
    assert data.size_summary(files)["images"].sum() == len(files)


def test_person_keys_are_salted_and_stable():
    assert data.person_key("HOSP1", salt=b"a" * 32) == data.person_key(" HOSP1 ", salt=b"a" * 32)
    assert data.person_key("HOSP1", salt=b"a" * 32) != data.person_key("HOSP1", salt=b"b" * 32)
    assert data.person_key("HOSP1", salt=b"a" * 32) != data.person_key("HOSP2", salt=b"a" * 32)
    assert "HOSP1" not in data.person_key("HOSP1")
    assert dicom.person_salt() == dicom.person_salt()  # made once, then read back


def test_a_malformed_header_value_is_read_without_a_warning_that_would_quote_it(tmp_path):
    patient = {"PatientBirthDate": "2015-13-45 Alma", "PatientID": "HOSP-" + "9" * 70}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (quoting the value) when writing it
        ds = dicom.xray_to_dicom(source_pixels("NORMAL"), patient=patient)
        path = write(ds, tmp_path / "malformed.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decoded(path, 16).shape == (16, 16, 1)
        assert dicom.read_patient_id(path) == patient["PatientID"]
        assert dicom.dicom_header_summary(path)[:2] == (224, 224)


def test_the_cache_key_of_a_dicom_file_holds_the_rule_and_decoder_versions(dicom_folder):
    root, headers, _ = dicom_folder
    key = _cache_key(root / next(iter(headers)), 32, "rgb")
    assert f"dicom-rule-v{dicom.DICOM_RULE_VERSION}" in key
    assert any(part.startswith("pydicom=") for part in key[5:])


def _header_values(headers: dict[str, dict[str, str]]) -> set[str]:
    values = {h[field] for h in headers.values() for field in HEADER_FIELDS}
    return values | {v.split("^")[-1] for v in values if "^" in v}


def _files_holding(folder: Path, values: set[str]) -> list[str]:
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        text = path.read_bytes().decode("latin-1")
        found += [f"{path}: {v}" for v in values if v in text]
    return found


def test_no_header_value_and_no_person_key_is_written(dicom_folder, tmp_path):
    root, headers, _ = dicom_folder
    results = tmp_path / "results"
    xrays = data.load_chest_xrays(root, image_size=16, seed=0, results_dir=results)
    split_csv = pd.read_csv(results / "split.csv")
    assert list(split_csv.columns) == ["path", "split", "label"]
    keys = set(xrays.table.group[xrays.table.identity == "PatientID"])
    assert keys and _files_holding(results, _header_values(headers) | keys) == []


# ---------------------------------------------------------------------------------------
# The inference command
# ---------------------------------------------------------------------------------------


def test_the_inference_command_scores_a_dicom_as_its_source_and_prints_no_header(tmp_path):
    keras = pytest.importorskip("keras")
    from helpers import predict

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    folder = tmp_path / "model"
    folder.mkdir()
    model.save(folder / "model.keras")
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "model_id": "tiny",
                "parameters": {"image_size": 32, "color_mode": "rgb"},
                "threshold": {"threshold": 0.5, "method": "fixed for the test"},
            }
        )
    )
    ds = dicom.xray_to_dicom(
        source_pixels("PNEUMONIA"), bits_stored=12, photometric="MONOCHROME1", patient=HEADER
    )
    ds.compress(RLELossless)
    scan = write(ds, tmp_path / "scan.dcm")
    png = tmp_path / "source.png"
    Image.fromarray(source_pixels("PNEUMONIA"), "L").save(png)
    out, err = io.StringIO(), io.StringIO()
    heatmaps = tmp_path / "heatmaps"
    code = predict.main(
        ["--model", str(folder), "--json", "--gradcam", str(heatmaps), str(scan), str(png)],
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    scores = [p["probability"] for p in json.loads(out.getvalue())["predictions"]]
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)
    assert (heatmaps / "scan.gradcam.png").is_file()
    values = set(HEADER.values()) | {str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)}
    printed = out.getvalue() + err.getvalue()
    assert not [v for v in values if v in printed]
    assert _files_holding(heatmaps, values) == []


def test_person_level_intervals_count_patients_not_dicom_files(dicom_folder):
    keras = pytest.importorskip("keras")
    from helpers import evaluate

    root, _, _ = dicom_folder
    xrays = data.load_chest_xrays(root, image_size=16, seed=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    train = evaluate.predict_split(model, xrays.train)
    persons = len(set(xrays.train.groups))
    assert persons < len(xrays.train)  # several images per patient
    assert sum(evaluate.metrics_at(train, 0.5)["persons"].values()) == persons
    by_file_name = evaluate.Predictions(train.split, train.paths, train.labels, train.scores)
    assert sum(evaluate.metrics_at(by_file_name, 0.5)["persons"].values()) == len(xrays.train)


def test_the_data_chapter_on_a_dicom_folder_says_where_persons_came_from_and_leaks_no_header(
    dicom_folder, tmp_path
):
    papermill = pytest.importorskip("papermill")
    from helpers.book.execute import KERNEL_NAME

    root, headers, jpegs = dicom_folder
    (tmp_path / "run").mkdir()
    results, executed = tmp_path / "run" / "results", tmp_path / "run" / "data.ipynb"
    papermill.execute_notebook(
        str(config.REPO_ROOT / "book" / "data.ipynb"),
        str(executed),
        parameters={"data_dir": str(root), "results_dir": str(results), "image_size": 16},
        kernel_name=KERNEL_NAME,
        cwd=str(config.REPO_ROOT / "book"),
        progress_bar=False,
    )
    text = executed.read_text()
    expected = f"the PatientID for {len(headers)} files and the file name for {len(jpegs)} files"
    assert expected in text
    keys = {dicom.person_key(h["PatientID"]) for h in headers.values()}
    assert _files_holding(tmp_path / "run", _header_values(headers) | keys) == []


# ---------------------------------------------------------------------------------------
# The person of each test prediction, and the salt in the runner's data fingerprint
# ---------------------------------------------------------------------------------------


def _tiny_dicom_folder(root: Path) -> dict[str, str | None]:
    """train/ and test/, one class each way, random DICOM names; returns test path -> ID.

    In test/: two files of HOSP1 (one per class), one of HOSP2, one without PatientID and
    one JPEG named by the Kaggle convention."""
    rng = np.random.default_rng(5)
    small = {label: source_pixels(label)[::8, ::8] for label in SOURCES}
    files = {
        "train/NORMAL": ["HOSP8", "HOSP9"],
        "train/PNEUMONIA": ["HOSP7"],
        "test/NORMAL": ["HOSP1", "HOSP2", None],
        "test/PNEUMONIA": ["HOSP1"],
    }
    ids: dict[str, str | None] = {}
    for folder, patients in files.items():
        for patient in patients:
            label = folder.split("/")[1]
            header = {} if patient is None else {"PatientID": patient}
            path = f"{folder}/{rng.bytes(8).hex()}.dcm"
            write(dicom.xray_to_dicom(small[label], patient=header), root / path)
            ids[path] = patient
    jpeg = "test/PNEUMONIA/person31_virus_70.jpeg"
    Image.fromarray(small["PNEUMONIA"]).save(root / jpeg)
    ids[jpeg] = None
    return {path: patient for path, patient in ids.items() if path.startswith("test/")}


def test_test_persons_of_a_dicom_folder_come_from_patient_id_not_the_file_name(tmp_path):
    root = tmp_path / "tiny"
    ids = _tiny_dicom_folder(root)
    paths = sorted(ids, reverse=True)  # an order of our own
    persons = dict(zip(paths, data.test_persons(root, paths)))
    hosp1 = [path for path in paths if ids[path] == "HOSP1"]
    assert len(hosp1) == 2 and persons[hosp1[0]] == persons[hosp1[1]]
    assert persons[hosp1[0]] == data.person_key("HOSP1", salt=dicom.person_salt())
    assert len(set(persons.values())) == len(paths) - 1  # only HOSP1's two files share one
    for path, patient in ids.items():
        if patient is None:  # no PatientID, or not DICOM: the file name's group
            assert persons[path] == data.group_id(path)
    assert persons["test/PNEUMONIA/person31_virus_70.jpeg"] == "person31"
    assert not any(
        patient in person for person in persons.values() for patient in ("HOSP1", "HOSP2")
    )


def test_the_salt_is_part_of_a_dicom_folders_fingerprint_and_is_not_created(tmp_path):
    root = tmp_path / "tiny"
    _tiny_dicom_folder(root)
    salt = Path(dicom.person_salt_file())  # the test's own, from the autouse fixture
    assert salt.parent == tmp_path and not salt.exists()
    absent = data.data_fingerprint(root)
    assert not salt.exists()  # fingerprinting writes nothing
    assert data.data_fingerprint(root) == absent
    made = dicom.person_salt()  # as the first chapter to list the folder makes it
    with_salt = data.data_fingerprint(root)
    assert with_salt != absent
    salt.write_bytes(bytes(reversed(made)))  # another salt: other persons, another split
    changed = data.data_fingerprint(root)
    assert changed not in (absent, with_salt)
    salt.write_bytes(made)
    assert data.data_fingerprint(root) == with_salt


def test_the_runner_makes_the_salt_before_recording_a_dicom_folders_fingerprint(tmp_path):
    from helpers.book.staleness import chapter_inputs
    from helpers.book.toc import Chapter

    root = tmp_path / "tiny"
    _tiny_dicom_folder(root)
    salt = Path(dicom.person_salt_file())
    chapter = Chapter("data", config.REPO_ROOT / "book" / "data.ipynb")
    inputs = chapter_inputs(
        chapter,
        {"data_dir": str(root)},
        code_files={},
        env_hash="",
        upstream_keys={},
        data_cache={},
    )
    # Recorded with the salt the chapter will use, so the next build finds nothing changed.
    assert salt.exists() and inputs["data"] == data.data_fingerprint(root)
    salt.unlink()
    assert data.data_fingerprint(root, make_salt=True) != inputs["data"]  # a new salt
