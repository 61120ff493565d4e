"""`align.pick = "consensus"`: in a photo with several faces, the one that agrees with the identity's
other photos, judged by a face model's embeddings. Blocks that take arrays; the stage embeds."""
from __future__ import annotations

import numpy as np

from evaluation.ijb.pooling import l2_normalize_rows


def identity_reference(embeddings: np.ndarray) -> np.ndarray | None:
    """The identity's reference direction: the unit mean of its photos' unit embeddings [N, D] -> [D];
    None for no photos (or embeddings that cancel out)."""
    if len(embeddings) == 0:
        return None
    mean = l2_normalize_rows(np.asarray(embeddings, dtype=np.float64)).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 1e-12 else None


def most_agreeing(reference: np.ndarray, candidates: np.ndarray) -> tuple[int, np.ndarray]:
    """(index of the candidate [K, D] whose cosine to `reference` [D] is highest, all K cosines); ties go
    to the earlier candidate (the pick policy's preferred face comes first)."""
    cosines = l2_normalize_rows(np.asarray(candidates, dtype=np.float64)) @ np.asarray(reference, dtype=np.float64)
    return int(np.argmax(cosines)), cosines
