"""`evaluate_ijb`: IJB-B / IJB-C 1:1 verification of a model, the protocol of insightface's IJB evaluation,
and 1:N identification where the release holds its gallery and probe lists.

Read the release (`layout`) and its 1:N lists (`identification`), align every loose crop to 112x112 from
its five landmarks (`align`), embed it and its flip in resumable chunks (`embed`), pool image -> media ->
template features (`pooling`), score every template pair by cosine (`scores`) and read the ROC
(`metrics`); the same template features are searched for 1:N (`identification`), with no second pass
over the images.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignment.warp import ALIGNED_SIZE, align_face, load_rgb
from common.errors import ConfigError, PipelineError
from evaluation.ijb.embed import ViewsFn, embed_in_chunks
from evaluation.ijb.identification import PROBE_CHUNK, identification_record, read_search_lists, search_files
from evaluation.ijb.layout import LANDMARKS, TID_MID, IjbLayout, read_ijb_layout
from evaluation.ijb.metrics import IJB_FARS, ijb_metrics
from evaluation.ijb.pooling import image_features, template_features
from evaluation.ijb.scores import PAIR_CHUNK, cosine_scores, template_rows

log = logging.getLogger(__name__)


@dataclass
class IjbOptions:
    """insightface's three switches (its defaults): flip test, norm score, detector score."""

    use_flip_test: bool = True
    use_norm_score: bool = True
    use_detector_score: bool = True


@dataclass
class IjbResult:
    """One IJB set's results: `record` is its entry in `evaluate`'s summary (`sets`; with `identification`
    where the release has 1:N lists), fpr/tpr its full ROC."""

    name: str
    record: dict[str, Any]
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray  # float32 [P], one cosine per template pair of the pair file


def aligned_loader(layout: IjbLayout) -> Callable[[int], np.ndarray]:
    """`load(k)`: image k of the layout, read and aligned to uint8 [112, 112, 3] RGB."""

    def load(k: int) -> np.ndarray:
        try:
            return align_face(load_rgb(layout.image_path(k)), layout.landmarks[k], ALIGNED_SIZE)
        except ValueError as e:
            raise ConfigError(f"{layout.meta_file(LANDMARKS)}: image {layout.images[k]!r}: {e}") from None

    return load


def image_feature_matrix(chunk_files: list[Path], layout: IjbLayout, options: IjbOptions) -> np.ndarray:
    """Per-image features float32 [N, D] (`pooling.image_features`), chunk file by chunk file."""
    out: np.ndarray | None = None
    start = 0
    for path in chunk_files:
        views = np.load(path, allow_pickle=False)
        stop = start + views.shape[0]
        feats = image_features(views, layout.detector_scores[start:stop], options.use_flip_test,
                               options.use_norm_score, options.use_detector_score)
        if out is None:
            out = np.empty((len(layout.images), feats.shape[1]), dtype=np.float32)
        if feats.shape[1] != out.shape[1]:
            raise PipelineError(f"{path}: embeddings of size {feats.shape[1]}, other chunks have {out.shape[1]}")
        out[start:stop] = feats
        start = stop
    if out is None or start != len(layout.images):
        raise PipelineError(f"embedding chunks cover {start} images of {len(layout.images)}")
    return out


def score_layout(layout: IjbLayout, image_feats: np.ndarray, pair_chunk: int = PAIR_CHUNK
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(template ids int64 [T], unit template features float32 [T, D], cosine score float32 [P] per template
    pair) from image features [N, D]."""
    identity = np.array_equal(layout.image_index, np.arange(len(layout.images)))
    line_feats = image_feats if identity else image_feats[layout.image_index]
    ids, unit = template_features(line_feats, layout.templates, layout.medias)
    try:
        rows1, rows2 = template_rows(ids, layout.pair_t1), template_rows(ids, layout.pair_t2)
    except ValueError as e:
        raise ConfigError(f"{layout.meta_file(TID_MID)}: {e}") from None
    return ids, unit, cosine_scores(unit, rows1, rows2, pair_chunk)


def evaluate_ijb(root: str | os.PathLike[str], embed_views: ViewsFn, work_dir: str | os.PathLike[str],
                 fingerprint: dict[str, Any], options: IjbOptions | None = None, *, chunk_size: int = 8192,
                 batch_size: int = 256, workers: int = 0, pair_chunk: int = PAIR_CHUNK,
                 probe_chunk: int = PROBE_CHUNK) -> IjbResult:
    """IJB 1:1 verification, and 1:N identification where `meta/` holds the 1:N lists, of the model behind
    `embed_views` on the release at `root`.

    `embed_views(images uint8 [B, 112, 112, 3]) -> [B, 2, D]` raw outputs of each image and its flip;
    `fingerprint` identifies the model (JSON values) so that `work_dir`'s chunks of another model are
    not reused. Record: `auc`, `tar_at_far` ("1e-6" .. "1e-1", `metrics` module docstring),
    `tar_at_far_bounded`, `thresholds`, `templates`, `template_pairs`, `images`, `options`, and
    `identification` (`identification.identification_record`) where the 1:N lists exist; they are read
    and checked before anything is embedded.
    """
    options = options or IjbOptions()
    layout = read_ijb_layout(root)
    search = read_search_lists(layout)
    if search is None:
        log.info("%s: no 1:N lists in %s (%s): 1:N identification skipped", layout.name, layout.root / "meta",
                 ", ".join(search_files(layout.name).values()))
    log.info("%s: %d images, %d templates, %d template pairs", layout.name, len(layout.images),
             np.unique(layout.templates).size, layout.pair_labels.size)
    chunk_files = embed_in_chunks(aligned_loader(layout), len(layout.images), embed_views, work_dir,
                                  {"model": fingerprint, "set": layout.name, "layout": layout.fingerprint(),
                                   "aligned_size": ALIGNED_SIZE}, chunk_size=chunk_size, batch_size=batch_size,
                                  workers=workers, desc=layout.name)
    feats = image_feature_matrix(chunk_files, layout, options)
    ids, unit, scores = score_layout(layout, feats, pair_chunk)
    del feats
    metrics, fpr, tpr = ijb_metrics(scores, layout.pair_labels, IJB_FARS)
    record = {**metrics, "templates": int(ids.size), "template_pairs": int(layout.pair_labels.size),
              "images": len(layout.images), "options": {
                  "flip_test": options.use_flip_test, "norm_score": options.use_norm_score,
                  "detector_score": options.use_detector_score}}
    if search is not None:
        record["identification"] = identification_record(search, ids, unit, probe_chunk)
    return IjbResult(layout.name, record, fpr, tpr, scores)
