"""`SyntheticDataset`: the embedded default data set, a `FaceDataset` of face-like identities rendered on the fly.

Everything is a pure function of (seed, identity, index): the same array comes back in any order and
in any process, and different seeds draw independent identities. The images come from
`readers.synthetic.renderer`; `root` names the renderer version, seed and difficulty.
"""
from __future__ import annotations

import numpy as np

from common.errors import ConfigError
from config.choices import check_image_side
from readers.base import FaceDataset
from readers.synthetic.renderer import RENDERER_VERSION, FaceIdentity, render_face, sample_identity


class SyntheticDataset(FaceDataset):
    """`identities` x `images_per_identity` rendered faces; key `syn/<identity:05d>/<i:04d>`, label = identity.

    `root` records the generator (`synthetic:v<renderer>:seed=..:difficulty=..`) so caches built from
    another seed or difficulty do not match.
    """

    def __init__(self, identities: int, images_per_identity: int, image_size: int, seed: int,
                 difficulty: float) -> None:
        if identities < 1 or images_per_identity < 1:
            raise ConfigError(
                f"synthetic data set: identities ({identities}) and images_per_identity ({images_per_identity}) "
                "must be >= 1"
            )
        if seed < 0:
            raise ConfigError(f"synthetic data set: seed must be >= 0, got {seed}")
        if difficulty < 0:
            raise ConfigError(f"synthetic data set: difficulty must be >= 0, got {difficulty}")
        check_image_side(image_size, "data.image_size")
        self.identities, self.images_per_identity = int(identities), int(images_per_identity)
        self.seed, self.difficulty = int(seed), float(difficulty)
        keys = [f"syn/{c:05d}/{i:04d}" for c in range(identities) for i in range(images_per_identity)]
        labels = np.repeat(np.arange(identities, dtype=np.int64), images_per_identity)
        root = f"synthetic:v{RENDERER_VERSION}:seed={self.seed}:difficulty={self.difficulty:g}"
        super().__init__("synthetic", root, image_size, keys, labels)
        self._identity_cache: dict[int, FaceIdentity] = {}

    def identity(self, identity: int) -> FaceIdentity:
        ident = self._identity_cache.get(identity)
        if ident is None:
            ident = self._identity_cache[identity] = sample_identity(self.seed, identity)
        return ident

    def render(self, identity: int, index: int) -> np.ndarray:
        """Image `index` of identity `identity` as uint8 [image_size, image_size, 3]."""
        rng = np.random.default_rng([self.seed, identity, 2, index])
        return render_face(self.identity(identity), rng, self.difficulty, self.image_size)

    def load(self, index: int) -> np.ndarray:
        identity, i = divmod(int(index), self.images_per_identity)
        if not 0 <= identity < self.identities:
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        return self.render(identity, i)
