"""The six databases as declarations: subject naming, emotions, protocols, extra columns.

Subject ids are the names of the release's folders (or, for MMEW, the id in its file names):
CASME II 'sub01' (sheet: 1 or '01'), SAMM '006', SMIC 's01' (SMIC-E subject folders; its clip
folders keep the short form 's1_ne_01'), CAS(ME)³ 'spNO.1', DFME 'sub0003', MMEW 'S01' (the
sheet's Subject 1; clips 'S01-01-001' lie under Micro_Expression/<emotion>/, the macro part
under Macro_Expression/S01/).
"""

from __future__ import annotations

from .database import Database, SubjectFormat
from .protocols import cde, own_classes

CASME2_CDE_LEFT_OUT = {
    "sub04_EP12_01f": "apex unknown: the 2019 revision of the sheet has '/' as its apex frame",
    "sub05_EP09_05f": "apex frame equals onset frame (69): no onset-to-apex motion",
}
"""CASME II disgust clips missing from the official MEGC2019 composite list (labels.csv): the
sheet's mapping gives 90 negatives, the list 88. Both clips lack a usable onset->apex pair."""

CASME2 = Database(
    title="CASME II",
    clip_names=r"EP\d+(_\d+)?\w*",
    clip_example="EP02_01f",
    subject=SubjectFormat("sub", 2),
    emotions=("happiness", "disgust", "repression", "surprise", "sadness", "fear", "others"),
    emotion_aliases={"other": "others"},
    protocols={
        # MEGC2019 built its CASME II part from the five-class labelling, which has no sadness or
        # fear (9 clips): negative = disgust + repression, minus the two clips above.
        "cde": cde(("disgust", "repression"), "happiness", "surprise", left_out=CASME2_CDE_LEFT_OUT),
        "5class": own_classes("happiness", "disgust", "repression", "surprise", "others"),
    },
)

SAMM = Database(
    title="SAMM",
    clip_names=r"\d+_\d+_\d+",
    clip_example="006_1_2",
    subject=SubjectFormat("", 3),
    emotions=("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise", "other"),
    emotion_aliases={"others": "other"},
    protocols={
        "cde": cde(("anger", "contempt", "disgust", "fear", "sadness"), "happiness", "surprise"),
        # the common MEGC 5-class set (classes with enough samples). Xie et al. run "five-class"
        # SAMM without naming the classes, and their Fig. 7 text discusses fear, which this set
        # lacks: their set differs, and which five they used cannot be recovered from the paper.
        "5class": own_classes("anger", "contempt", "happiness", "surprise", "other"),
    },
    extra_columns={"objective_class": ("objectiveclasses", "objectiveclass")},
)

SMIC = Database(
    title="SMIC-HS",
    clip_names=r"s\d+_(ne|po|sur)_\d+",
    clip_example="s1_ne_01",
    subject=SubjectFormat("s", 2),
    emotions=("negative", "positive", "surprise"),
    emotion_aliases={"0": "negative", "1": "positive", "2": "surprise"},
    protocols={"cde": own_classes("negative", "positive", "surprise")},
    has_aus=False,
    # frame numbers are absolute image numbers whose file names may be zero-padded
    # (image076518.jpg for 76518): the loader takes the names from these paths where given
    extra_columns={
        "onset_frame_path": ("onsetframepath",),
        "apex_frame_path": ("apexframepath",),
        "offset_frame_path": ("offsetframepath",),
    },
)

CASME3 = Database(
    title="CAS(ME)³ Part A",
    clip_names=r"[a-z]",
    clip_example="a",
    subject=SubjectFormat("spNO.", 0),
    emotions=("happy", "disgust", "surprise", "fear", "anger", "sad", "others"),
    emotion_aliases={"other": "others"},
    protocols={
        "3class": cde(("disgust", "fear", "anger", "sad"), "happy", "surprise"),
        "4class": cde(("disgust", "fear", "anger", "sad"), "happy", "surprise", others="others"),
        "7class": own_classes("happy", "disgust", "surprise", "fear", "anger", "sad", "others"),
    },
    # a clip is one expression inside a task video ('a'..'m'); one video holds several clips
    sample_id="{subject}_{clip}_{onset}",
    lowercase_clip=True,
    extra_columns={"objective_class": ("objectiveclass", "objectiveclasses")},
)

DFME = Database(
    title="DFME",
    clip_names=r"sub\d+_\d+",
    clip_example="sub0003_01",
    subject=SubjectFormat("sub", 4),
    # in EmotionId order (0 anger ... 6 surprise)
    emotions=("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
    protocols={"7class": own_classes("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")},
    sample_id="{clip}",
    extra_columns={"fps": ("fps",)},
)

MMEW = Database(
    title="MMEW",
    clip_names=r"S\d+-\d+-\d+",
    clip_example="S01-01-001",
    subject=SubjectFormat("S", 2),
    # the csv's label 1..6 (one_hot_label) order, then the 'others' class its copy removed
    emotions=("happiness", "surprise", "sadness", "disgust", "fear", "anger", "others"),
    emotion_aliases={"other": "others"},
    protocols={
        "6class": own_classes("happiness", "surprise", "sadness", "disgust", "fear", "anger"),
        "7class": own_classes("happiness", "surprise", "sadness", "disgust", "fear", "anger", "others"),
    },
    sample_id="{clip}",
    # '<emotion folder>/<clip>/<apex>.jpg'; without it the folder is the sheet's emotion as written
    extra_columns={"imagename": ("imagename",)},
)

DATABASES: dict[str, Database] = {
    "casme2": CASME2, "samm": SAMM, "smic": SMIC, "casme3": CASME3, "dfme": DFME, "mmew": MMEW,
}
