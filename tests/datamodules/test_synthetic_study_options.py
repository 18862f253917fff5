"""The generator options the studies plant their truth with: shared-AU ("hard") clips at the configured
share, and a per-subject class skew that makes identity predict the label (an identity confound)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import pytest

from datamodules import SyntheticDataModule
from datamodules.errors import MERError
from datamodules.synthetic.emotions import HARD_PROTOTYPES, PROTOTYPES
from datamodules.synthetic.generator import SyntheticConfig, generate_specs

CONFIG = SyntheticConfig(n_subjects=10, clips_per_subject=20, difficulty=0.15, seed=5)


@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.8])
def test_hard_clips_share_their_au_set_with_another_class_at_the_configured_share(fraction: float) -> None:
    specs = generate_specs(replace(CONFIG, hard_fraction=fraction))
    labels_of_set = defaultdict(set)
    for spec in specs:
        labels_of_set[spec.aus].add(spec.emotion3)
    shared = {aus for aus, labels in labels_of_set.items() if len(labels) > 1}
    hard_sets = {aus for sets in HARD_PROTOTYPES.values() for aus in sets}
    normal_sets = {aus for sets in PROTOTYPES.values() for aus in sets}
    assert shared <= hard_sets  # only the designed AU sets are shared between classes
    drawn_hard = [s for s in specs if s.aus in hard_sets - normal_sets]
    assert len(drawn_hard) == round(fraction * len(specs))
    assert {s.sample_id for s in specs if s.hard} <= {s.sample_id for s in drawn_hard}
    if fraction >= 0.4:  # e.g. AU12 under both happiness (positive) and contempt (negative)
        assert {("positive", "negative")} <= {tuple(sorted(labels_of_set[(12,)], reverse=True))}
        assert sum(s.hard for s in specs) >= 0.9 * len(drawn_hard)


def majority_share(specs) -> float:
    """Share of clips whose class is their subject's most frequent class (1.0: the face gives the label)."""
    by_subject = defaultdict(list)
    for spec in specs:
        by_subject[spec.subject].append(spec.emotion3)
    return sum(Counter(labels).most_common(1)[0][1] for labels in by_subject.values()) / len(specs)


def test_a_small_class_skew_makes_the_subject_predict_the_label() -> None:
    """Pooled class shares stay close to the group prior; per subject, the majority class covers most
    clips with a strong confound (0.2) and far fewer with the default (2.5)."""
    confounded = [majority_share(generate_specs(replace(CONFIG, class_skew=0.2, seed=s))) for s in range(4)]
    default = [majority_share(generate_specs(replace(CONFIG, seed=s))) for s in range(4)]
    assert np.mean(confounded) >= 0.8 and np.mean(default) <= 0.7
    assert np.mean(confounded) - np.mean(default) >= 0.2
    pooled = Counter(s.emotion3 for s in generate_specs(replace(CONFIG, class_skew=0.2)))
    assert set(pooled) == {"negative", "positive", "surprise"}


def test_datamodule_options_reach_the_generator_and_keep_old_cache_keys(tmp_path) -> None:
    module = SyntheticDataModule(hard_fraction=0.4, class_skew=0.3, cache_dir=str(tmp_path))
    assert module.generator.hard_fraction == 0.4 and module.generator.class_skew == 0.3
    assert module.cache_settings()["generator"]["class_skew"] == 0.3
    default = SyntheticDataModule(cache_dir=str(tmp_path)).cache_settings()["generator"]
    assert "class_skew" not in default  # caches prepared before the option keep their key
    for bad, message in (({"hard_fraction": 1.5}, "hard_fraction"), ({"class_skew": 0}, "class_skew")):
        with pytest.raises(MERError, match=message):
            SyntheticDataModule(cache_dir=str(tmp_path), **bad)
