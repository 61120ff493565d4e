"""`evaluate_sets` against the protocol called directly, names, distributions and the embedding contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from evaluation.compactness import intra_class_similarities
from evaluation.pairs import PairSet
from evaluation.protocol import summarize
from evaluation.verify import evaluate_sets


def _pair_set(name: str, seed: int, labelled: bool = True) -> tuple[PairSet, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 4)
    centres = rng.normal(size=(6, 8))
    emb = centres[labels] + 0.8 * rng.normal(size=(24, 8))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    idx1 = rng.integers(0, 24, 60)
    idx2 = rng.integers(0, 24, 60)
    pair_set = PairSet(name, Path(f"/sets/{seed}/{name}.txt"), [Path(f"/img/{k}.png") for k in range(24)],
                       idx1, idx2, labels[idx1] == labels[idx2], labels if labelled else None)
    return pair_set, emb


def test_records_equal_the_protocol_called_directly() -> None:
    (a, emb_a), (b, emb_b) = _pair_set("lfw", 0), _pair_set("cfp", 1, labelled=False)
    embs = {id(a): emb_a, id(b): emb_b}
    results = evaluate_sets([a, b], lambda s: embs[id(s)], nfolds=5, fars=(1e-1,))
    assert list(results) == ["lfw", "cfp"]
    for pair_set, emb in ((a, emb_a), (b, emb_b)):
        got = results[pair_set.name]
        direct = summarize(emb[pair_set.idx1], emb[pair_set.idx2], pair_set.issame, nfolds=5, fars=(1e-1,))
        for key in ("accuracy_mean", "accuracy_std", "auc", "tar_at_far", "pairs"):
            assert got.record[key] == direct[key], key
        assert got.fpr[0] == 0.0 and got.tpr[-1] == 1.0
    assert np.allclose(results["lfw"].intra, intra_class_similarities(emb_a, a.labels))
    assert "similarity" in results["lfw"].record and "similarity" not in results["cfp"].record
    assert results["cfp"].intra.size == 0


def test_distributions_off_and_duplicate_names() -> None:
    (a, emb), (b, _) = _pair_set("lfw", 0), _pair_set("lfw", 2)
    results = evaluate_sets([a, b], lambda s: emb, distributions=False)
    assert list(results) == ["lfw", "lfw.txt"]  # the second set of that name is named by its file
    assert "similarity" not in results["lfw"].record and results["lfw"].intra.size == 0
    with pytest.raises(ConfigError, match="listed twice"):
        evaluate_sets([a, a], lambda s: emb)
    c = PairSet("lfw", Path("/elsewhere/lfw.txt"), a.images, a.idx1, a.idx2, a.issame)
    with pytest.raises(ConfigError, match="two sets are named"):
        evaluate_sets([a, b, c], lambda s: emb)


def test_wrong_number_of_embeddings_is_refused() -> None:
    a, emb = _pair_set("lfw", 0)
    with pytest.raises(ValueError, match="24 images"):
        evaluate_sets([a], lambda s: emb[:10])


def test_a_model_whose_outputs_are_not_finite_gets_no_score() -> None:
    from common.errors import PipelineError

    a, emb = _pair_set("lfw", 0)
    broken = emb.copy()
    broken[3, 1] = np.nan
    with pytest.raises(PipelineError, match="1 of 24 images is not finite.*first: image 3"):
        evaluate_sets([a], lambda s: broken)
    with pytest.raises(PipelineError, match="24 of 24"):
        evaluate_sets([a], lambda s: np.full_like(emb, np.inf))
