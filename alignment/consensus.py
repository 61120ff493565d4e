"""`align.pick = "consensus"`: in a photo with several faces, the one that agrees with the identity's
other photos, judged by a face model's embeddings. Blocks that take arrays; the stage embeds."""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64; a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def identity_reference(embeddings: np.ndarray) -> np.ndarray | None:
    """The identity's reference direction: the unit mean of its photos' unit embeddings [N, D] -> [D];
    None for no photos (or embeddings that cancel out)."""
    if len(embeddings) == 0:
        return None
    mean = unit_rows(embeddings).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 1e-12 else None


def most_agreeing(reference: np.ndarray, candidates: np.ndarray) -> tuple[int, np.ndarray]:
    """(index of the candidate [K, D] whose cosine to `reference` [D] is highest, all K cosines); ties go
    to the earlier candidate (the pick policy's preferred face comes first)."""
    cosines = unit_rows(candidates) @ np.asarray(reference, dtype=np.float64)
    return int(np.argmax(cosines)), cosines
