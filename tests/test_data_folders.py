"""Tests of helpers.data.folders: the folder layout, file tables, and what file names say."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import JUNK_NAMES, REAL_DATA_DIR

from helpers import config, data
from helpers.data import DataError


@pytest.mark.parametrize(
    "name, expected",
    [
        ("person1003_bacteria_2934.jpeg", "person1003"),
        ("person12_virus_45.jpeg", "person12"),
        ("person0012_virus_45.jpeg", "person12"),  # leading zeros: same person
        ("PERSON7_bacteria_1.JPEG", "person7"),
        ("train/PNEUMONIA/person1000_virus_1681.jpeg", "person1000"),  # folders ignored
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0011-0001-0002.jpeg", "IM-0011"),
        ("im-0011-0002.png", "IM-0011"),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("normal2-im-1427-0002.jpeg", "NORMAL2-IM-1427"),
        ("scan_17.png", "scan_17"),  # anything else: its own group
    ],
)
def test_group_id_examples(name, expected):
    assert data.group_id(name) == expected


def test_images_of_one_study_or_person_share_a_group_and_others_do_not():
    assert data.group_id("IM-0115-0001.jpeg") == data.group_id("IM-0115-0002.jpeg")
    assert data.group_id("IM-0115-0001.jpeg") != data.group_id("NORMAL2-IM-0115-0001.jpeg")
    assert data.group_id("person1_bacteria_1.jpeg") == data.group_id("person1_virus_7.jpeg")
    assert data.group_id("person1_bacteria_1.jpeg") != data.group_id("person11_bacteria_1.jpeg")


@pytest.mark.parametrize(
    "name, kind",
    [
        ("person1_bacteria_1.jpeg", "bacteria"),
        ("person1_virus_7.jpeg", "virus"),
        ("IM-0001-0001.jpeg", ""),
    ],
)
def test_pneumonia_kind(name, kind):
    assert data.pneumonia_kind(name) == kind


def test_default_data_dir_is_the_embedded_copy():
    assert REAL_DATA_DIR == config.REPO_ROOT / "data" / "chest_xray"
    assert data.check_data_dir() == REAL_DATA_DIR.resolve()


def test_list_split_reads_every_flavour_and_skips_junk_silently(mixed_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silently: no warning either
        table = data.list_split(mixed_folder.root, "train")
    assert table.path.tolist() == mixed_folder.images_of("train")
    assert list(table.columns) == ["path", "label", "group", "identity"]
    assert set(table.identity) == {"file name"}  # no DICOM file here
    assert not any(Path(p).name in JUNK_NAMES for p in table.path)
    assert table.label.tolist() == [int("/PNEUMONIA/" in p) for p in table.path]
    with pytest.raises(ValueError, match="split must be one of"):
        data.list_split(mixed_folder.root, "training")


def _kaggle_archive(make_xrays, tmp_path):
    """The Kaggle archive as unpacked: chest_xray/chest_xray/... beside __MACOSX/ and ._ files."""
    folder = make_xrays(name="archive/chest_xray/chest_xray")
    top = tmp_path / "archive"
    for rel in folder.images[:5]:
        fork = (
            top
            / "__MACOSX"
            / "chest_xray"
            / "chest_xray"
            / Path(rel).parent
            / f"._{Path(rel).name}"
        )
        fork.parent.mkdir(parents=True, exist_ok=True)
        fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
        (folder.root / Path(rel).parent / f"._{Path(rel).name}").write_bytes(b"\x00\x05\x16\x07")
    return top, folder


@pytest.mark.parametrize(
    "level", ["archive", "archive/chest_xray", "archive/chest_xray/chest_xray"]
)
def test_loader_finds_the_data_from_any_level_of_the_kaggle_archive(make_xrays, tmp_path, level):
    top, folder = _kaggle_archive(make_xrays, tmp_path)
    given = tmp_path / level
    assert data.check_data_dir(given) == folder.root.resolve()
    xrays = data.load_chest_xrays(given, image_size=16, seed=0)
    assert xrays.train.data_dir == folder.root.resolve()
    assert (
        sorted(xrays.train.paths + xrays.val.paths + xrays.test.paths) == folder.images
    )  # no ._ files


def test_layout_too_deep_or_absent_is_a_clear_error(make_xrays, tmp_path):
    make_xrays(name="a/b/c/d/chest_xray")
    with pytest.raises(DataError, match=r"split folder .*a[/\\]train is missing.*3 levels down"):
        data.check_data_dir(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"empty.train is missing.*to hold train/, test/ \(and, optionally, val/\)"
    ):
        data.check_data_dir(tmp_path / "empty")


def test_find_layout_root_skips_macosx_copy(tmp_path):
    for s in config.OFFICIAL_SPLITS:
        (tmp_path / "chest_xray" / "__MACOSX" / s).mkdir(parents=True)
        (tmp_path / "chest_xray" / "chest_xray" / s).mkdir(parents=True)
    assert data.find_layout_root(tmp_path) == tmp_path / "chest_xray" / "chest_xray"
    with pytest.raises(DataError, match="no folder holding"):
        data.find_layout_root(tmp_path / "chest_xray" / "__MACOSX" / "train")


def test_describe_files_reads_headers(mixed_folder):
    table = data.describe_files(mixed_folder.root)
    assert sorted(table.path) == mixed_folder.images
    row = table.set_index("path").loc["train/NORMAL/IM-0101-0001.jpeg"]
    assert (row.width, row.height, row["mode"], row.format) == (37, 53, "L", "JPEG")
    modes = set(table["mode"])
    assert {"L", "RGB", "RGBA", "P", "I;16", "LA"} <= modes
    assert (table.bytes > 0).all()


def test_duplicate_groups_finds_byte_identical_files(make_xrays):
    folder = make_xrays(test_per_class=2)
    assert data.duplicate_groups(folder.root).empty
    src = folder.root / "train" / "NORMAL" / "IM-0100-0001.jpeg"
    twin = folder.root / "test" / "NORMAL" / "IM-0777-0001.jpeg"
    twin.write_bytes(src.read_bytes())
    dups = data.duplicate_groups(folder.root)
    assert sorted(dups.path) == ["test/NORMAL/IM-0777-0001.jpeg", "train/NORMAL/IM-0100-0001.jpeg"]
    assert dups.sha1.nunique() == 1
    assert set(dups.split) == {"train", "test"}


def test_download_kaggle_fails_clearly_offline(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")

    def offline(handle, *args, **kwargs):
        assert handle == "paultimothymooney/chest-xray-pneumonia"
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(RuntimeError, match="are you online") as info:
        data.download_kaggle()
    assert "chest-xray-pneumonia" in str(info.value)
    assert "embedded copy" in str(info.value)


def test_download_kaggle_returns_the_folder_holding_the_splits(monkeypatch, tmp_path):
    kagglehub = pytest.importorskip("kagglehub")
    nested = tmp_path / "chest_xray" / "chest_xray"
    for split in ("train", "val", "test"):
        (nested / split).mkdir(parents=True)
    (tmp_path / "chest_xray" / "__MACOSX").mkdir()
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(tmp_path))
    assert data.download_kaggle() == nested


# ---------------------------------------------------------------------------------------
# Folders as people repackage them: no val/, class folders named in another case
# ---------------------------------------------------------------------------------------


def _without_val(root: Path, how: str) -> None:
    """Remove the official validation images the way repackagings do."""
    val = root / "val"
    if how == "removed":
        shutil.rmtree(val)
    elif how == "empty folder":
        shutil.rmtree(val)
        val.mkdir()
    elif how == "empty class folders":
        for class_dir in val.iterdir():
            shutil.rmtree(class_dir)
            class_dir.mkdir()
            (class_dir / ".DS_Store").write_bytes(b"junk")  # no image, not an error


@pytest.mark.parametrize("how", ["removed", "empty folder", "empty class folders"])
def test_a_missing_or_empty_val_folder_is_accepted_and_said(make_xrays, tmp_path, how):
    full = make_xrays(name="full")
    folder = make_xrays(name="repackaged")
    _without_val(folder.root, how)
    assert data.check_data_dir(folder.root) == folder.root.resolve()
    assert data.list_split(folder.root, "val").empty
    assert data.class_folders(folder.root, "val") == {}
    assert not data.data_fingerprint(folder.root).startswith("invalid")

    xrays = data.load_chest_xrays(folder.root, image_size=16, seed=0, results_dir=tmp_path)
    with_val = data.load_chest_xrays(full.root, image_size=16, seed=0)
    assert xrays.official_val_images == 0
    assert with_val.official_val_images == len(full.images_of("val")) == 4
    # The train folder is split exactly as with val/; nothing else joins the validation side.
    assert xrays.val.paths == [p for p in with_val.val.paths if p.startswith("train/")]
    assert xrays.train.paths == with_val.train.paths
    assert xrays.test.paths == with_val.test.paths
    assert set(xrays.val.labels) == {0, 1}
    written = pd.read_csv(tmp_path / "split.csv")
    assert list(written.columns) == ["path", "split", "label"]
    assert written["split"].value_counts().to_dict() == {
        "train": len(xrays.train),
        "val": len(xrays.val),
        "test": len(xrays.test),
    }
    assert written["path"].str.startswith(("train/", "test/")).all()
    assert "no official validation images" in xrays.official_val_note
    assert "val/ folder is missing or empty" in xrays.official_val_note
    assert "4 images of the official val/ folder joined" in with_val.official_val_note


def test_without_val_the_data_chapter_tables_show_zero_official_val_images(make_xrays):
    folder = make_xrays()
    shutil.rmtree(folder.root / "val")
    counts = data.official_counts(data.describe_files(folder.root))
    assert counts.loc["val", ["NORMAL", "PNEUMONIA", "total"]].tolist() == [0, 0, 0]
    assert counts.loc["train", "total"] == len(folder.images_of("train"))
    assert data.duplicate_groups(folder.root).empty
    assert "no official validation images" in data.official_val_size_note(0)
    assert data.official_val_size_note(16).startswith(
        "The official validation folder holds only 16 images"
    )
    for note in (
        data.official_val_size_note,
        lambda n: data.official_val_note(n, val_fraction=0.2),
    ):
        with pytest.raises(ValueError, match="0 or more"):
            note(-1)


def test_a_val_folder_with_images_of_one_class_only_is_refused(make_xrays):
    folder = make_xrays()
    shutil.rmtree(folder.root / "val" / "PNEUMONIA")
    with pytest.raises(DataError, match="class folder .*val.PNEUMONIA is missing"):
        data.check_data_dir(folder.root)


@pytest.mark.parametrize("split", ["train", "test"])
def test_train_and_test_stay_required(make_xrays, split):
    folder = make_xrays()
    shutil.rmtree(folder.root / split)
    with pytest.raises(DataError, match=rf"split folder .*{split} is missing") as info:
        data.check_data_dir(folder.root)
    assert str(folder.root / split) in str(info.value)


def test_the_archive_without_val_is_found_from_above(make_xrays, tmp_path):
    folder = make_xrays(name="archive/chest_xray/chest_xray")
    shutil.rmtree(folder.root / "val")
    assert data.check_data_dir(tmp_path / "archive") == folder.root.resolve()


def _rename_class_folders(root: Path, names: dict[str, str]) -> None:
    for split in config.OFFICIAL_SPLITS:
        for class_name, new_name in names.items():
            (root / split / class_name).rename(root / split / new_name)


@pytest.mark.parametrize(
    "names",
    [
        {"NORMAL": "normal", "PNEUMONIA": "pneumonia"},
        {"NORMAL": "Normal", "PNEUMONIA": "Pneumonia"},
        {"NORMAL": "normal", "PNEUMONIA": "PNEUMONIA"},
    ],
    ids=["lower", "capitalised", "mixed"],
)
def test_class_folders_match_in_any_case(make_xrays, tmp_path, names):
    upper = make_xrays(name="upper")
    folder = make_xrays(name="renamed")
    _rename_class_folders(folder.root, names)
    assert data.check_data_dir(folder.root) == folder.root.resolve()
    assert {k: v.name for k, v in data.class_folders(folder.root, "test").items()} == names

    xrays = data.load_chest_xrays(folder.root, image_size=16, seed=0, results_dir=tmp_path)
    reference = data.load_chest_xrays(upper.root, image_size=16, seed=0)

    def on_disk(path: str) -> str:  # the reference's path, with the folder names renamed
        split, class_name, name = path.split("/")
        return f"{split}/{names[class_name]}/{name}"

    for split in ("train", "val", "test"):
        # The same images on the same side, with the same labels; paths as named on disk.
        assert xrays[split].paths == sorted(on_disk(p) for p in reference[split].paths)
        assert dict(zip(xrays[split].paths, xrays[split].labels)) == {
            on_disk(p): label for p, label in zip(reference[split].paths, reference[split].labels)
        }
        assert all((folder.root / p).is_file() for p in xrays[split].paths)
    written = pd.read_csv(tmp_path / "split.csv")
    assert sorted(written.path) == sorted(on_disk(p) for p in upper.images)
    assert sorted(data.describe_files(folder.root).path) == sorted(written.path)
    assert not data.data_fingerprint(folder.root).startswith("invalid")


def test_two_class_folders_that_differ_only_in_case_are_refused_naming_both(make_xrays):
    folder = make_xrays()
    twin = folder.root / "train" / "normal"
    twin.mkdir()
    shutil.copy(folder.root / "train" / "NORMAL" / "IM-0100-0001.jpeg", twin / "IM-0999-0001.jpeg")
    with pytest.raises(DataError) as info:
        data.check_data_dir(folder.root)
    message = str(info.value)
    assert "'NORMAL'" in message and "'normal'" in message and "differ only in case" in message
    assert str(folder.root / "train") in message


def test_any_other_class_folder_is_refused_naming_it_and_what_is_expected(make_xrays):
    folder = make_xrays()
    _rename_class_folders(folder.root, {"NORMAL": "normal"})
    (folder.root / "test" / "Covid-19").mkdir()
    with pytest.raises(DataError) as info:
        data.check_data_dir(folder.root)
    message = str(info.value)
    assert "['Covid-19']" in message  # normal/ is a class folder, not an unexpected one
    assert "expected only ['NORMAL', 'PNEUMONIA'] (in any case)" in message
    assert str(folder.root / "test") in message


# ---------------------------------------------------------------------------------------
# The person of each test prediction
# ---------------------------------------------------------------------------------------


def test_test_persons_of_the_embedded_data_are_the_file_names_groups_in_the_order_given():
    paths = data.list_split(None, "test")["path"].tolist()
    given = paths[::-7] + paths[:3]  # another order, PNEUMONIA first, a path twice
    persons = data.test_persons(None, given)
    assert persons == [data.group_id(path) for path in given]
    assert persons[0].startswith("person") and len(set(persons)) < len(persons)


def test_test_persons_refuses_paths_outside_the_test_split_naming_them_and_the_folder(
    xray_folder,
):
    test_paths = xray_folder.images_of("test")
    outside = [xray_folder.images_of("train")[0], "test/NORMAL/missing.jpeg"]
    with pytest.raises(ValueError) as error:
        data.test_persons(xray_folder.root, [test_paths[0], *outside])
    message = str(error.value)
    assert str(xray_folder.root.resolve()) in message and "2 of 3 paths" in message
    assert all(repr(path) in message for path in outside)
    assert repr(test_paths[0]) not in message
    many = [f"test/NORMAL/missing-{i}.jpeg" for i in range(8)]
    with pytest.raises(ValueError, match=r"missing-4\.jpeg' and 3 more"):
        data.test_persons(xray_folder.root, many)
    with pytest.raises(ValueError, match="one path"):
        data.test_persons(xray_folder.root, test_paths[0])


def test_the_fingerprint_of_a_folder_without_dicom_ignores_the_person_salt(
    xray_folder, tmp_path, monkeypatch
):
    salt = tmp_path / "salt"
    monkeypatch.setenv(data.dicom.PERSON_SALT_FILE_VARIABLE, str(salt))
    before = data.data_fingerprint(xray_folder.root)
    salt.write_bytes(b"s" * 32)
    assert data.data_fingerprint(xray_folder.root) == before


def test_image_files_below_finds_images_at_any_depth_by_the_loaders_rules(mixed_folder, tmp_path):
    root = tmp_path / "export"
    shutil.copytree(mixed_folder.root, root / "2024" / "ward")
    (root / "__MACOSX" / "2024").mkdir(parents=True)
    (root / "__MACOSX" / "2024" / "._scan.jpeg").write_bytes(b"resource fork")
    (root / ".cache").mkdir()
    (root / ".cache" / "scan.png").write_bytes(b"hidden folder")
    (root / "top.DCM").write_bytes(b"named like DICOM; found, decoded later")
    found = data.image_files_below(root)
    relative = [p.relative_to(root).as_posix() for p in found]
    assert relative == sorted(["top.DCM", *(f"2024/ward/{p}" for p in mixed_folder.images)])
    assert all(p.parent.is_relative_to(root) for p in found)  # folder / relative path
    assert data.image_files_below(root / "__MACOSX") == []  # the folder given is searched


def test_image_files_below_refuses_a_missing_folder_or_a_file(tmp_path):
    (tmp_path / "scan.jpeg").write_bytes(b"")
    for given in (tmp_path / "nowhere", tmp_path / "scan.jpeg"):
        with pytest.raises(DataError, match=f"folder {given} does not exist or is not a folder"):
            data.image_files_below(given)
