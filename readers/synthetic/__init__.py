"""The synthetic face generator: a numpy face renderer, the `SyntheticDataset` built on it, and the
LFW-style held-out pair writer.

`renderer` draws identities and renders images of them, `dataset` is the `FaceDataset` over those
images, `pairs` writes an image folder with an LFW `pairs.txt`.
"""
from __future__ import annotations

from readers.synthetic.dataset import SyntheticDataset
from readers.synthetic.pairs import pair_name, write_pair_set
from readers.synthetic.renderer import RENDERER_VERSION, FaceIdentity, render_face, sample_identity

__all__ = [
    "SyntheticDataset", "write_pair_set", "pair_name", "render_face", "sample_identity", "FaceIdentity",
    "RENDERER_VERSION",
]
