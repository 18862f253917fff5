"""Annotation adapters: the real sheets (exact paper counts), the AU parser, and other releases' layouts.

Expected counts were computed independently with plain pandas on the sheets in ../shared.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from datamodules.annotations import DATASETS, PROTOCOLS, Annotations, load_annotations
from datamodules.annotations.action_units import parse_action_units
from datamodules.errors import MERError
from tests.conftest import require_shared

SHEETS = {
    "casme2": ("casme2/CASME2-coding-20140508.xlsx",),
    "samm": ("samm/SAMM_Micro_FACS_Codes_v2.xlsx",),
    "smic": ("smic/smic_apex.xlsx",),
    "casme3": ("casme3/casme3_partA_labels.xlsx",),
    "dfme": ("dfme/training_full_with_AU.xlsx", "dfme/testA_full_with_AU.xlsx", "dfme/testB_full_with_AU.xlsx"),
    "mmew": ("mmew/MMEW_Micro_Exp_delete_others.csv",),
}
SHEET_ROWS = {"casme2": 255, "samm": 159, "smic": 164, "casme3": 860, "dfme": 2629, "mmew": 234}
CDE_LEFT_OUT = "disgust (not in the protocol's official list)"


def sheet_paths(dataset: str) -> list[Path]:
    return [require_shared(f"data/annotations/{name}") for name in SHEETS[dataset]]


@cache
def real(dataset: str, protocol: str, fold_side: bool = True, fold_intensity: bool = True) -> Annotations:
    return load_annotations(dataset, sheet_paths(dataset), protocol, fold_side, fold_intensity)


# ---------------------------------------------------------------- real sheets: exact counts

EXPECTED = [
    # dataset, protocol, samples, subjects, class counts in label order, excluded
    ("casme2", "cde", 145, 24, [88, 32, 25], {"others": 99, "sadness": 7, "fear": 2, CDE_LEFT_OUT: 2}),
    ("casme2", "5class", 246, 26, [32, 63, 27, 25, 99], {"sadness": 7, "fear": 2}),
    ("samm", "cde", 133, 28, [92, 26, 15], {"other": 26}),
    ("samm", "5class", 136, 27, [57, 12, 26, 15, 26], {"disgust": 9, "fear": 8, "sadness": 6}),
    ("smic", "cde", 164, 16, [70, 51, 43], {}),
    ("casme3", "3class", 699, 88, [457, 55, 187], {"others": 161}),
    ("casme3", "4class", 860, 94, [457, 55, 187, 161], {}),
    ("casme3", "7class", 860, 94, [55, 250, 187, 86, 64, 57, 161], {}),
    ("dfme", "7class", 2629, 259, [241, 171, 735, 365, 311, 359, 447], {}),
    ("mmew", "6class", 234, 30, [36, 89, 13, 72, 16, 8], {}),
    ("mmew", "7class", 234, 30, [36, 89, 13, 72, 16, 8, 0], {}),
]


def test_every_dataset_and_protocol_is_covered() -> None:
    assert DATASETS == ("casme2", "samm", "smic", "casme3", "dfme", "mmew")
    assert {(d, p) for d, p, *_ in EXPECTED} == {(d, p) for d in DATASETS for p in PROTOCOLS[d]}


@pytest.mark.parametrize("dataset, protocol, n_samples, n_subjects, counts, excluded", EXPECTED)
def test_real_sheet_counts(dataset: str, protocol: str, n_samples: int, n_subjects: int,
                           counts: list[int], excluded: dict[str, int]) -> None:
    annotations = real(dataset, protocol)
    summary = annotations.summary()
    assert summary["n_samples"] == n_samples
    assert summary["n_subjects"] == n_subjects
    assert summary["class_counts"] == dict(zip(PROTOCOLS[dataset][protocol], counts))
    assert summary["excluded"] == excluded
    # every sheet row is a sample, excluded, or unusable: nothing is dropped silently
    assert n_samples + sum(excluded.values()) + len(summary["unusable"]) == SHEET_ROWS[dataset]
    samples = annotations.samples
    assert samples["sample_id"].is_unique
    assert samples["sample_id"].str.fullmatch(r"[A-Za-z0-9._-]+").all()
    assert (samples["label_name"] == [annotations.class_names[i] for i in samples["label"]]).all()


@pytest.mark.parametrize("part, n_samples, n_subjects, counts", [
    ("training", 1856, 176, [161, 100, 548, 265, 206, 278, 298]),
    ("testA", 474, 42, [39, 34, 129, 62, 63, 46, 101]),
    ("testB", 299, 41, [41, 37, 58, 38, 42, 35, 48]),
])
def test_dfme_splits_one_by_one(part: str, n_samples: int, n_subjects: int, counts: list[int]) -> None:
    summary = load_annotations("dfme", require_shared(f"data/annotations/dfme/{part}_full_with_AU.xlsx"), "7class").summary()
    assert (summary["n_samples"], summary["n_subjects"]) == (n_samples, n_subjects)
    assert list(summary["class_counts"].values()) == counts
    assert summary["warnings"] == summary["unusable"] == []


def test_cde_membership_is_the_official_list() -> None:
    official = pd.read_csv(require_shared("data/megc2019_cde/labels.csv"), dtype=str)
    for dataset in ("casme2", "samm", "smic"):
        listed = official[official["dataset"] == dataset]
        # labels.csv's imagename is '<sub>_<clip as on disk>.jpg', the adapters' sample id
        expected = dict(zip(listed["imagename"].str.removesuffix(".jpg"), listed["label"].astype(int)))
        samples = real(dataset, "cde").samples
        assert dict(zip(samples["sample_id"], samples["label"])) == expected, dataset
        assert set(samples["subject"]) == set(listed["sub"]), dataset


# ---------------------------------------------------------------- real sheets: columns and warnings

def test_sample_columns_follow_the_release_naming() -> None:
    def first(dataset: str, *columns: str) -> list[object]:
        return real(dataset, next(iter(PROTOCOLS[dataset]))).samples.iloc[0][list(columns)].tolist()

    assert first("casme2", "sample_id", "dataset", "subject", "clip", "onset", "apex", "offset") == \
        ["sub01_EP02_01f", "casme2", "sub01", "EP02_01f", 46, 59, 86]
    assert first("casme2", "emotion", "emotion_raw", "label", "label_name", "aus", "sheet", "sheet_row") == \
        ["happiness", "happiness", 1, "positive", "12", "CASME2-coding-20140508.xlsx", 2]
    assert first("samm", "sample_id", "subject", "clip", "emotion", "emotion_raw", "sheet_row", "objective_class") == \
        ["006_006_1_2", "006", "006_1_2", "anger", "Anger", 15, "3"]
    assert first("smic", "sample_id", "subject", "clip", "onset", "emotion", "emotion_raw", "aus") == \
        ["s20_s20_ne_01", "s20", "s20_ne_01", 17581039, "negative", "0", ""]
    assert first("smic", "onset_frame_path") == ["smic/HS_long/SMIC_HS_E/s20/s20_ne_01/image17581039.jpg"]
    assert first("dfme", "sample_id", "subject", "clip", "fps", "sheet") == \
        ["sub0003_01", "sub0003", "sub0003_01", "500", "training_full_with_AU.xlsx"]
    assert first("mmew", "sample_id", "subject", "clip", "apex", "imagename") == \
        ["S01-01-001", "S01", "S01-01-001", 15, "happiness/S01-01-001/15.jpg"]
    casme3 = real("casme3", "7class").samples.set_index("sample_id")
    assert casme3.loc["spNO.1_e_62", ["subject", "clip", "onset", "aus"]].tolist() == ["spNO.1", "e", 62, "12"]
    assert casme3.loc["spNO.1_e_96", "aus"] == "12"


def test_unknown_offsets_are_missing_not_dropped() -> None:
    smic = real("smic", "cde").samples.set_index("clip")
    assert smic["offset"].dtype == "Int64" and smic["offset"].isna().sum() == 7
    assert pd.isna(smic.loc["s3_ne_03", "offset"]) and pd.isna(smic.loc["s3_ne_03", "offset_frame_path"])


def issues(dataset: str, protocol: str, kind: str = "warnings") -> list[str]:
    return real(dataset, protocol).summary()[kind]


def test_casme2_warnings() -> None:
    warnings = issues("casme2", "5class")
    unknown_au = [w for w in warnings if w.endswith("AU '?' is unknown; ignored")]
    assert [w.split(" (")[0] for w in unknown_au] == [f"CASME2-coding-20140508.xlsx row {row}" for row in (42, 45, 50, 186, 246)]
    assert unknown_au[0] == "CASME2-coding-20140508.xlsx row 42 (sub05/EP05_03): AU '?' is unknown; ignored"
    assert "CASME2-coding-20140508.xlsx row 47 (sub05/EP09_05f): apex equals onset (69): no onset-to-apex motion" in warnings
    assert len(warnings) == 6 and issues("casme2", "5class", "unusable") == []
    assert issues("casme2", "cde") == warnings  # the sheet's issues do not depend on the protocol


def test_samm_warnings() -> None:
    warnings = issues("samm", "cde")
    prefix = "SAMM_Micro_FACS_Codes_v2.xlsx row"
    assert f"{prefix} 30 (007/007_6_1): AU alternatives '(R6 or R12)': kept all of 6+12" in warnings
    assert f"{prefix} 169 (035/035_7_2): AU alternatives 'R14A or 17A or 24A': kept all of 14+17+24" in warnings
    assert f"{prefix} 135 (026/026_5_1): AU 'soft focus' is unknown; ignored" in warnings
    assert f"{prefix} 140 (028/028_4_1): apex 1143 is after offset 1134" in warnings
    assert f"{prefix} 147 (032/032_3_1): apex 1930 is before onset 4896" in warnings
    assert sum("AU alternatives" in w for w in warnings) == 5
    assert sum("qualifier 'ref'" in w for w in warnings) == 9
    assert len(warnings) == 17 and issues("samm", "cde", "unusable") == []
    # unfolded, the '/' alternatives of one AU become ambiguous too: 'A/L12', '10A/B', '4A/B'
    assert len(real("samm", "cde", False, False).summary()["warnings"]) == 20
    samples = real("samm", "cde").samples.set_index("clip")
    assert samples.loc["007_6_1", "aus"] == "6+12+15"
    assert samples.loc["026_5_1", "aus"] == "14+17"


def test_smic_warnings() -> None:
    warnings = issues("smic", "cde")
    assert len(warnings) == 7 and all(w.endswith("offset unknown (empty); left empty") for w in warnings)
    assert warnings[0] == "smic_apex.xlsx row 159 (s03/s3_ne_03): offset unknown (empty); left empty"


def test_casme3_warnings() -> None:
    assert issues("casme3", "7class", "unusable") == []
    warnings = issues("casme3", "7class")
    assert ("casme3_partA_labels.xlsx row 751 (spNO.216/d): onset 3647 is after offset 2694: no frames to sample; "
            "fix the sheet to prepare it") in warnings
    assert "casme3_partA_labels.xlsx row 61 (spNO.14/j): clip 'J' read as 'j' (CAS(ME)³ Part A clip folders are lower case)" in warnings
    assert "casme3_partA_labels.xlsx row 798 (spNO.40/e): offset 0 before onset 1812: offset unknown; left empty" in warnings
    assert "casme3_partA_labels.xlsx row 130 (spNO.149/d): apex 83 is before onset 112" in warnings
    assert sum(w.endswith("no onset-to-apex motion") for w in warnings) == 55
    assert "casme3_partA_labels.xlsx row 751 (spNO.216/d): apex 2668 is before onset 3647" in warnings
    assert len(warnings) == 61
    assert "spNO.14_j_1012" in set(real("casme3", "7class").samples["sample_id"])


def test_dfme_and_mmew_sheets_are_clean() -> None:
    for dataset, protocol in (("dfme", "7class"), ("mmew", "6class")):
        assert issues(dataset, protocol) == issues(dataset, protocol, "unusable") == []


def test_au_vocabulary_and_matrix() -> None:
    annotations = real("casme2", "5class")
    vocabulary = annotations.au_vocabulary
    assert vocabulary[:4] == ("AU1", "AU2", "AU4", "AU5")
    assert [int(name[2:]) for name in vocabulary] == sorted(int(name[2:]) for name in vocabulary)
    matrix = annotations.au_matrix()
    assert matrix.dtype == np.uint8 and matrix.shape == (246, len(vocabulary))
    first = annotations.samples.index[annotations.samples["sample_id"] == "sub01_EP02_01f"][0]
    assert [vocabulary[i] for i in np.flatnonzero(matrix[first])] == ["AU12"]
    unknown_only = annotations.samples.index[annotations.samples["clip"] == "EP05_03"][0]
    assert matrix[unknown_only].sum() == 0 and annotations.samples.loc[unknown_only, "aus"] == ""
    sided = real("casme2", "5class", fold_side=False).au_vocabulary
    assert {"AUL10", "AUR10", "AU10"} <= set(sided) and len(sided) > len(vocabulary)
    assert real("smic", "cde").au_matrix().shape == (164, 0)


def test_unknown_dataset_or_protocol_lists_the_choices() -> None:
    with pytest.raises(MERError, match="unknown dataset 'casme'; choose one of casme2, samm, smic, casme3, dfme, mmew"):
        load_annotations("casme", "x.xlsx", "cde")
    with pytest.raises(MERError, match="unknown protocol '3class' for casme2; choose one of cde, 5class"):
        load_annotations("casme2", "x.xlsx", "3class")
    with pytest.raises(MERError, match="annotation sheet not found: .*missing.xlsx"):
        load_annotations("casme2", "missing.xlsx", "cde")


# ---------------------------------------------------------------- the AU parser

@pytest.mark.parametrize("cell, folded, unfolded, n_warnings", [
    ("4+L10", "4+10", "4+L10", 0),
    ("R1+R2", "1+2", "R1+R2", 0),
    ("15A+17", "15+17", "15A+17", 0),
    ("R6A+R12", "6+12", "R6A+R12", 0),
    ("(R6 or R12)+R15", "6+12+15", "R6+R12+R15", 1),
    ("(R6 or R12) + R15", "6+12+15", "R6+R12+R15", 1),
    ("?", "", "", 1),
    ("26+25", "25+26", "25+26", 0),
    (12, "12", "12", 0),
    (12.0, "12", "12", 0),
    ("AU12", "12", "12", 0),
    ("", "", "", 0),
    (float("nan"), "", "", 0),
    ("l12+r2", "2+12", "R2+L12", 0),
    ("B23+T18", "18+23", "T18+B23", 0),
    ("12L+10R", "10+12", "R10+L12", 0),
    ("A/L12", "12", "A12+L12", 0),
    ("10A/B", "10", "10A+10B", 0),
    ("L12 or L14", "12+14", "L12+L14", 1),
    ("R14A or 17A or 24A", "14+17+24", "R14A+17A+24A", 1),
    ("ref(7B)+43", "7+43", "7B+43", 1),
    ("R14+17+soft focus", "14+17", "R14+17", 1),
    ("AD38+M57", "38+57", "38+57", 0),
])
def test_parse_action_units(cell: object, folded: str, unfolded: str, n_warnings: int) -> None:
    units, warnings = parse_action_units(cell)
    assert "+".join(map(str, units)) == folded
    assert len(warnings) == n_warnings
    units, _ = parse_action_units(cell, fold_side=False, fold_intensity=False)
    assert "+".join(map(str, units)) == unfolded


def test_parse_action_units_folds_side_and_intensity_separately() -> None:
    assert [str(u) for u in parse_action_units("R6A+L12", fold_side=False)[0]] == ["R6", "L12"]
    assert [str(u) for u in parse_action_units("R6A+L12", fold_intensity=False)[0]] == ["6A", "12"]
    assert parse_action_units("(R6 or R12)")[1] == ["AU alternatives '(R6 or R12)': kept all of 6+12"]
    assert parse_action_units("?")[1] == ["AU '?' is unknown; ignored"]


# ---------------------------------------------------------------- other releases of the sheets

def write_xlsx(path: Path, frame: pd.DataFrame, banner: list[list[object]] = (), empty_first_sheet: bool = False) -> Path:
    """`frame` under `banner` rows, optionally in the second sheet of the workbook."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    if empty_first_sheet:
        sheet.title = "notes"
        sheet = workbook.create_sheet("data")
    for row in [*banner, list(frame.columns), *frame.astype(object).where(frame.notna(), None).values.tolist()]:
        sheet.append(row)
    workbook.save(path)
    return path


def casme2_sheet() -> pd.DataFrame:
    return pd.read_excel(sheet_paths("casme2")[0], dtype=object)


def samm_sheet() -> pd.DataFrame:
    return pd.read_excel(sheet_paths("samm")[0], header=13, dtype=object)


def test_samm_without_banner_as_csv(tmp_path: Path) -> None:
    path = tmp_path / "samm.csv"
    samm_sheet().to_csv(path, index=False)
    annotations = load_annotations("samm", path, "cde")
    assert annotations.summary()["class_counts"] == real("samm", "cde").summary()["class_counts"]
    assert set(annotations.samples["subject"]) == set(real("samm", "cde").samples["subject"])  # '006' kept in csv
    # row numbers are the csv's now: header on line 1, 007_6_1 the 16th clip
    assert "samm.csv row 17 (007/007_6_1): AU alternatives '(R6 or R12)': kept all of 6+12" in annotations.summary()["warnings"]


def test_smic_e_own_annotation_without_apex(tmp_path: Path) -> None:
    """SMIC-E's own sheet layout: Subject, Filename, OnsetF, OffsetF, Emotion as words, no apex column."""
    smic = pd.read_excel(sheet_paths("smic")[0], dtype=object)
    own = pd.DataFrame({"Subject": smic["subject"], "Filename": smic["clip"], "OnsetF": smic["onset_frame"],
                        "OffsetF": smic["offset_frame"],
                        "Emotion": smic["label"].map({0: "negative", 1: "positive", 2: "surprise"})})
    annotations = load_annotations("smic", write_xlsx(tmp_path / "SMIC-HS-E_annotation.xlsx", own), "cde")
    assert annotations.summary()["class_counts"] == {"negative": 70, "positive": 51, "surprise": 43}
    assert annotations.samples["apex"].isna().all()
    warnings = annotations.summary()["warnings"]
    assert "SMIC-HS-E_annotation.xlsx row 2 (s20/s20_ne_01): apex unknown (empty); left empty" in warnings


def test_casme2_revision_with_relabelled_clip_and_unknown_apex(tmp_path: Path) -> None:
    """Like the 2019 revision: '/' apex, a relabelled clip; plus another layout (banner, renamed and
    reordered columns, second sheet, subjects as 'sub01', emotions capitalised)."""
    sheet = casme2_sheet()
    where = lambda subject, clip: (sheet["Subject"] == subject) & (sheet["Filename"] == clip)  # noqa: E731
    sheet.loc[where("04", "EP12_01f"), "ApexFrame"] = "/"
    sheet.loc[where("01", "EP03_02"), "Estimated Emotion"] = "disgust"  # others -> disgust
    sheet["Subject"] = "sub" + sheet["Subject"]
    sheet["Estimated Emotion"] = sheet["Estimated Emotion"].str.capitalize()
    sheet = sheet.rename(columns={"OnsetFrame": "Onset", "ApexFrame": "Apex", "OffsetFrame": "offset_frame",
                                  "Estimated Emotion": "Emotion"})
    sheet = sheet[["Filename", "Subject", "Emotion", "Onset", "Apex", "offset_frame", "Action Units"]]
    path = write_xlsx(tmp_path / "CASME2-coding-20190701.xlsx", sheet,
                      banner=[["CASME II coding, revised"], []], empty_first_sheet=True)
    annotations = load_annotations("casme2", path, "cde")
    summary = annotations.summary()
    assert summary["class_counts"] == {"negative": 89, "positive": 32, "surprise": 25}
    assert summary["excluded"] == {"others": 98, "sadness": 7, "fear": 2, CDE_LEFT_OUT: 2}
    assert "CASME2-coding-20190701.xlsx row 33 (sub04/EP12_01f): apex unknown ('/'); left empty" in summary["warnings"]
    five = load_annotations("casme2", path, "5class").samples.set_index("sample_id")
    assert pd.isna(five.loc["sub04_EP12_01f", "apex"]) and five.loc["sub04_EP12_01f", "offset"] == 321
    assert five.loc["sub01_EP03_02", ["emotion", "emotion_raw", "sheet_row"]].tolist() == ["disgust", "Disgust", 5]


def test_row_problems_are_listed_not_raised(tmp_path: Path) -> None:
    sheet = casme2_sheet().head(6).copy()
    sheet["Subject"] = [1, "01", "sub01", "x", 2, 2]
    sheet.loc[1, "Estimated Emotion"] = "joy"
    sheet.loc[2, "OnsetFrame"] = "ten"
    sheet.loc[4, ["OnsetFrame", "OffsetFrame"]] = [90, 80]
    sheet.loc[5, "Filename"] = sheet.loc[4, "Filename"] = "EP02_01f"
    sheet.loc[5, "OnsetFrame"] = 10
    annotations = load_annotations("casme2", write_xlsx(tmp_path / "odd.xlsx", sheet), "5class")
    assert annotations.summary()["unusable"] == [
        "odd.xlsx row 3 (sub01/EP03_02): emotion 'joy' is not a CASME II emotion "
        "(known: happiness, disgust, repression, surprise, sadness, fear, others)",
        "odd.xlsx row 4 (sub01/EP04_02): onset 'ten' is not a frame number",
        "odd.xlsx row 5 (x/EP04_03): subject 'x' is not a CASME II subject id (like 'sub01' or 1)",
    ]
    assert "odd.xlsx row 6 (sub02/EP02_01f): onset 90 is after offset 80: no frames to sample; fix the sheet to prepare it" \
        in annotations.summary()["warnings"]
    samples = annotations.samples
    assert samples["sample_id"].tolist() == ["sub01_EP02_01f", "sub02_EP02_01f", "sub02_EP02_01f_2"]
    # the same clip twice: both kept, the second renamed, with a warning
    ids = load_annotations("casme2", write_xlsx(tmp_path / "twice.xlsx", pd.concat([sheet.head(1)] * 3)), "5class")
    assert ids.samples["sample_id"].tolist() == ["sub01_EP02_01f", "sub01_EP02_01f_2", "sub01_EP02_01f_3"]
    assert ids.summary()["warnings"][0] == \
        "twice.xlsx row 3 (sub01/EP02_01f): sample id 'sub01_EP02_01f' repeats twice.xlsx row 2; renamed 'sub01_EP02_01f_2'"


def test_missing_column_is_one_error_naming_it(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "no_offset.xlsx", casme2_sheet().drop(columns="OffsetFrame"))
    with pytest.raises(MERError) as error:
        load_annotations("casme2", path, "cde")
    message = str(error.value)
    assert "no_offset.xlsx" in message and "no 'offset' column" in message and "'OnsetFrame'" in message
    assert "\n" not in message


def test_sheet_without_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("just,some\nnotes,here\n")
    with pytest.raises(MERError, match="notes.csv: no header row with a 'subject' column"):
        load_annotations("mmew", path, "6class")


def test_another_databases_sheet_is_one_error() -> None:
    with pytest.raises(MERError) as error:
        load_annotations("samm", sheet_paths("casme2")[0], "cde")
    message = str(error.value)
    assert "no clip name looks like a SAMM clip (e.g. '006_1_2'; found 'EP02_01f', ...)" in message and "\n" not in message


@pytest.mark.parametrize("dataset, title, foreign, found", [
    # every row is unusable there (no subject id of the database): once 0 samples and exit 0, now one error
    ("casme3", "CAS(ME)³ Part A", "dfme", "sub0003_01"),
    ("dfme", "DFME", "casme3", "a"),
])
def test_casme3_and_dfme_refuse_each_others_sheet(dataset: str, title: str, foreign: str, found: str) -> None:
    sheet = sheet_paths(foreign)[0]
    with pytest.raises(MERError) as error:
        load_annotations(dataset, sheet, "7class")
    message = str(error.value)
    assert message.startswith(f"{sheet}: no clip name looks like a {title} clip")
    assert f"found {found!r}" in message and "another database" in message and "\n" not in message


def test_every_foreign_sheet_is_refused_and_every_own_sheet_read() -> None:
    for dataset in SHEETS:
        protocol = next(iter(PROTOCOLS[dataset]))
        for owner in SHEETS:
            sheet = sheet_paths(owner)[0]
            if owner == dataset:
                assert len(load_annotations(dataset, sheet, protocol).samples) > 0
            else:
                # SMIC's sheet has no AU column: the databases that need one say so first
                with pytest.raises(MERError, match="is this the sheet of another database|no 'aus' column") as error:
                    load_annotations(dataset, sheet, protocol)
                assert str(error.value).startswith(str(sheet)) and "\n" not in str(error.value)


@pytest.mark.parametrize("content", [b"Subject,Filename\n1,EP02_01f\n", b"", b"PK\x03\x04 zip without a workbook"])
def test_an_xlsx_that_is_not_a_workbook_is_one_error(tmp_path: Path, content: bytes) -> None:
    import zipfile
    path = tmp_path / "CASME2-coding-20140508.xlsx"
    if content.startswith(b"PK"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "no workbook in here")
    else:
        path.write_bytes(content)
    with pytest.raises(MERError) as error:
        load_annotations("casme2", path, "cde")
    message = str(error.value)
    assert message == (f"{path}: not an Excel workbook (renamed or damaged?); open it in a spreadsheet app and save it "
                       "as .xlsx, or export it as .csv")
