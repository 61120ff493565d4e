"""`cache.identity`: the identity CSR table."""
from __future__ import annotations

import numpy as np
import pytest

from cache import identity_csr


def test_identity_csr_groups_rows_and_skips_negative_labels() -> None:
    labels = np.array([2, 0, 2, -1, 1, 0, 2])
    rows, offsets = identity_csr(labels, 4)
    assert offsets.tolist() == [0, 2, 3, 6, 6]
    assert rows.tolist() == [1, 5, 4, 0, 2, 6]
    assert rows.dtype == np.int64 and offsets.dtype == np.int64
    with pytest.raises(ValueError, match="row 0"):
        identity_csr(np.array([4, 0]), 4)
