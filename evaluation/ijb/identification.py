"""IJB-B / IJB-C 1:N identification: the release's two galleries searched by its mixed probes.

Files in `meta/` beside the 1:1 ones (insightface's release; `<name>` = `ijbc` | `ijbb`):

- `<name>_1N_gallery_G1.csv`, `<name>_1N_gallery_G2.csv` (IJB-B: `_S1`, `_S2`): the two galleries, whose
  subjects are disjoint;
- `<name>_1N_probe_mixed.csv`: the probe templates (still images and video frames mixed).

Each is comma-separated with a header row first (`TEMPLATE_ID,SUBJECT_ID,FILENAME,...`; insightface's
IJB_1N.py skips it unread), then one row per image whose first two columns are the template id and the
subject id; the other columns are not read. A template is listed on several rows; its subject is the
subject of those rows, which must agree. Blank lines are skipped; every other malformed line is a
ConfigError naming the file and line number, as in `layout`.

Template features are the 1:1 ones (`pooling.template_features` over every `tid_mid` line of the
template, unit length), which is how insightface's IJB_1N.py builds gallery and probe templates. A probe
searches a gallery by cosine similarity to each gallery template (`similarity_blocks`, in chunks of
probes). Two readings are reported, as `metrics` reports two readings of TAR@FAR:

- per gallery (`G1`, `G2`; IJB-B `S1`, `S2`), the IJB-B/C open-set protocol (Whitelam et al. 2017,
  Maze et al. 2018: two disjoint galleries, each searched by the same mixed probes and scored on its own,
  as the Janus program's reference scoring code does): a probe is *mated* when its subject is enrolled in
  that gallery, else *non-mated*. CMC rank-k
  (`cmc`) is the fraction of mated probes whose first mated gallery template is among the k highest
  scores; TPIR@FPIR (`open_set_tpir`) thresholds the top score of every search. Each gallery is its own
  search, so non-mated probes of G1 are the probes of G2 subjects and the other way round.
- `G1+G2` (IJB-B `S1+S2`), the numbers insightface's IJB_1N.py prints: both galleries concatenated into
  one, every probe mated (a closed set: it refuses a probe whose subject is not enrolled exactly once),
  top-1/5/10 accuracy (`cmc` again) and its own TPIR@FPIR rule (`insightface_tpir`), which counts every
  non-mated probe-gallery comparison rather than every non-mated search.

Ranks count ties against the probe: a non-mated gallery template that scores exactly as high as the best
mated one ranks ahead of it (insightface's `argsort` leaves the order of ties unspecified).
"""
from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError
from evaluation.ijb.layout import META_FOLDER, TID_MID, IjbLayout
from evaluation.ijb.scores import template_rows
from evaluation.protocol import far_key

log = logging.getLogger(__name__)

GALLERY_NAMES = {"ijbc": ("G1", "G2"), "ijbb": ("S1", "S2")}
GALLERY_FILE = "{name}_1N_gallery_{gallery}.csv"
PROBE_FILE = "{name}_1N_probe_mixed.csv"
CSV_HEADER = ("TEMPLATE_ID", "SUBJECT_ID", "FILENAME")
RANKS = (1, 5, 10)
FPIRS = (1e-2, 1e-1)
PROBE_CHUNK = 1024  # probes scored at a time: a float32 [PROBE_CHUNK, gallery] block (14 MiB for IJB-C's 3.5k)


@dataclass
class SubjectList:
    """One 1:N file: its distinct templates (sorted), each one's subject and the line that first lists it."""

    path: Path
    templates: np.ndarray  # int64 [T], sorted
    subjects: np.ndarray  # int64 [T]
    lines: np.ndarray  # int64 [T]


@dataclass
class SearchLists:
    """The 1:N protocol of one release: its two galleries by name (`G1`, `G2` or `S1`, `S2`) and the probes."""

    galleries: dict[str, SubjectList]
    probes: SubjectList


def search_files(name: str) -> dict[str, str]:
    """File names in `meta/` of the 1:N lists: gallery name -> file, and "probe" -> the mixed-probe file."""
    files = {g: GALLERY_FILE.format(name=name, gallery=g) for g in GALLERY_NAMES[name]}
    files["probe"] = PROBE_FILE.format(name=name)
    return files


def _int_field(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(token.strip())
    except ValueError:
        raise ConfigError(f"{path}, line {lineno}: {what} must be an integer, got {token!r}") from None


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number from 1, fields) of every non-blank CSV row of a UTF-8 file (a byte-order mark is dropped)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            start = 1
            for fields in reader:
                if any(f.strip() for f in fields):
                    yield start, fields
                start = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise ConfigError(f"{path}: not a CSV file ({e})") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None


def _check_header(fields: list[str], path: Path, lineno: int) -> None:
    """ConfigError unless the first row is a header: not a data row, and where it names the TEMPLATE_ID and
    SUBJECT_ID columns, they are the first two, in that order (the columns insightface reads)."""
    names = [f.strip().upper() for f in fields]
    try:
        int(names[0])
    except ValueError:
        pass
    else:
        raise ConfigError(f"{path}, line {lineno}: expected the header row '{','.join(CSV_HEADER)},...' first, "
                          "got a data row")
    if {"TEMPLATE_ID", "SUBJECT_ID"} <= set(names) and names[:2] != ["TEMPLATE_ID", "SUBJECT_ID"]:
        raise ConfigError(f"{path}, line {lineno}: the header must start 'TEMPLATE_ID,SUBJECT_ID', got "
                          f"{','.join(fields[:3])!r}")


def read_subject_list(path: Path) -> SubjectList:
    """A 1:N gallery or probe file (module docstring): header row, then `TEMPLATE_ID,SUBJECT_ID,...` rows."""
    subject_of: dict[int, tuple[int, int]] = {}  # template -> (subject, first line)
    header_seen = False
    for lineno, fields in _rows(path):
        if not header_seen:
            _check_header(fields, path, lineno)
            header_seen = True
            continue
        if len(fields) < 2:
            raise ConfigError(f"{path}, line {lineno}: expected 'TEMPLATE_ID,SUBJECT_ID,...', got {len(fields)} field")
        template = _int_field(fields[0], path, lineno, "TEMPLATE_ID")
        subject = _int_field(fields[1], path, lineno, "SUBJECT_ID")
        if template in subject_of:
            known, first = subject_of[template]
            if known != subject:
                raise ConfigError(f"{path}, line {lineno}: template {template} has subject {subject}, but "
                                  f"subject {known} on line {first}")
        else:
            subject_of[template] = (subject, lineno)
    if not subject_of:
        raise ConfigError(f"{path}: no templates listed")
    templates = np.array(sorted(subject_of), dtype=np.int64)
    subjects = np.array([subject_of[t][0] for t in templates.tolist()], dtype=np.int64)
    lines = np.array([subject_of[t][1] for t in templates.tolist()], dtype=np.int64)
    return SubjectList(path, templates, subjects, lines)


def _check_known(lists: SubjectList, known: np.ndarray, tid_mid: Path) -> None:
    missing = ~np.isin(lists.templates, known)
    if missing.any():
        k = int(np.flatnonzero(missing)[0])
        raise ConfigError(f"{lists.path}, line {int(lists.lines[k])}: template {int(lists.templates[k])} is not "
                          f"in {tid_mid.name}, so it has no images")


def _check_disjoint(a: SubjectList, b: SubjectList) -> None:
    shared = np.intersect1d(a.templates, b.templates)
    if shared.size:
        t = int(shared[0])
        line = int(b.lines[np.searchsorted(b.templates, t)])
        raise ConfigError(f"{b.path}, line {line}: template {t} is also listed in {a.path.name}; a template is in "
                          "one 1:N list only")


def read_search_lists(layout: IjbLayout) -> SearchLists | None:
    """The 1:N lists of a release, checked against its `tid_mid` templates; None where `meta/` holds none of them.

    ConfigError naming the missing file when only some are there, and naming file and line for a malformed
    row, a template without images or a template in two lists.
    """
    meta = layout.root / META_FOLDER
    files = {key: meta / f for key, f in search_files(layout.name).items()}
    present = {key: p.is_file() for key, p in files.items()}
    if not any(present.values()):
        return None
    if not all(present.values()):
        missing = ", ".join(f"'{META_FOLDER}/{files[k].name}'" for k, ok in present.items() if not ok)
        raise ConfigError(f"IJB root '{layout.root}': 1:N identification needs {missing} beside the other 1:N files")
    lists = {key: read_subject_list(p) for key, p in files.items()}
    known = np.unique(layout.templates)
    tid_mid = layout.meta_file(TID_MID)
    for one in lists.values():
        _check_known(one, known, tid_mid)
    keys = list(lists)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            _check_disjoint(lists[a], lists[b])
    probes = lists.pop("probe")
    return SearchLists(lists, probes)


# ---- the search ---------------------------------------------------------------------------------------------

def similarity_blocks(probe_feats: np.ndarray, gallery_feats: np.ndarray, chunk: int = PROBE_CHUNK
                      ) -> Iterator[tuple[int, np.ndarray]]:
    """(first probe row, cosine similarities float32 [c, G]) of unit probe features [Q, D] against unit gallery
    features [G, D], `chunk` probes at a time (memory chunk x G floats); dimensionless, in [-1, 1]."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    gallery_t = np.ascontiguousarray(np.asarray(gallery_feats, dtype=np.float32).T)
    probe_feats = np.asarray(probe_feats, dtype=np.float32)
    for start in range(0, probe_feats.shape[0], chunk):
        yield start, probe_feats[start:start + chunk] @ gallery_t


def mate_ranks(scores: np.ndarray, mated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe of a block of similarities [c, G] with its mate mask bool [c, G] (probe and gallery template
    of one subject): (best mated score float64 [c], -inf without a mate; rank int64 [c] of that mate,
    1 + the number of non-mated templates scoring at least as high, 0 without a mate; top non-mated score
    float64 [c], -inf when every gallery template is a mate)."""
    scores = np.asarray(scores, dtype=np.float64)
    best_mated = np.where(mated, scores, -np.inf).max(axis=1, initial=-np.inf)
    non_mated = np.where(mated, -np.inf, scores)
    has_mate = mated.any(axis=1)
    ahead = (non_mated >= best_mated[:, None]).sum(axis=1)
    rank = np.where(has_mate, 1 + ahead, 0).astype(np.int64)
    return best_mated, rank, non_mated.max(axis=1, initial=-np.inf)


def largest(values: np.ndarray, kept: np.ndarray, k: int) -> np.ndarray:
    """The k largest of `values` [n] and `kept` [m] together, in decreasing order: float64 [min(k, n + m)]."""
    both = np.concatenate([np.asarray(kept, dtype=np.float64).reshape(-1),
                           np.asarray(values, dtype=np.float64).reshape(-1)])
    if both.size > k:
        both = np.partition(both, both.size - k)[both.size - k:]
    return np.sort(both)[::-1]


@dataclass
class SearchOutcome:
    """Every probe's search of one gallery (`mate_ranks` per probe), plus the `keep` highest non-mated
    comparison scores of all probes and their total count (for `insightface_tpir`)."""

    best_mated: np.ndarray  # float64 [Q]
    rank: np.ndarray  # int64 [Q]
    top_non_mated: np.ndarray  # float64 [Q]
    non_mated_largest: np.ndarray  # float64 [<= keep], decreasing
    non_mated_count: int


def search_gallery(probe_feats: np.ndarray, probe_subjects: np.ndarray, gallery_feats: np.ndarray,
                   gallery_subjects: np.ndarray, keep: int = 0, chunk: int = PROBE_CHUNK) -> SearchOutcome:
    """Search unit gallery features [G, D] (subjects [G]) with every unit probe feature [Q, D] (subjects [Q])."""
    probe_subjects = np.asarray(probe_subjects, dtype=np.int64).reshape(-1)
    gallery_subjects = np.asarray(gallery_subjects, dtype=np.int64).reshape(-1)
    q = probe_subjects.shape[0]
    best, rank, top = np.empty(q), np.empty(q, dtype=np.int64), np.empty(q)
    kept = np.empty(0)
    count = 0
    for start, block in similarity_blocks(probe_feats, gallery_feats, chunk):
        stop = start + block.shape[0]
        mated = probe_subjects[start:stop, None] == gallery_subjects[None, :]
        best[start:stop], rank[start:stop], top[start:stop] = mate_ranks(block, mated)
        if keep > 0:
            kept = largest(block[~mated], kept, keep)
        count += int((~mated).sum())
    return SearchOutcome(best, rank, top, kept, count)


# ---- the equations ------------------------------------------------------------------------------------------

def cmc(ranks: np.ndarray, ks: Sequence[int] = RANKS) -> dict[str, float | None]:
    """Cumulative match characteristic at ranks k (`rank_<k>` keys): the fraction of mated searches whose first
    mate ranks k or better. ranks: int [M] >= 1 of the mated probes. None for every k when M = 0."""
    ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
    return {f"rank_{k}": (float(np.mean(ranks <= k)) if ranks.size else None) for k in ks}


def open_set_tpir(mated_scores: np.ndarray, mated_ranks: np.ndarray, non_mated_top: np.ndarray,
                  fpirs: Sequence[float] = FPIRS) -> dict[str, float | None]:
    """True positive identification rate at each false positive identification rate (IJB-B/C, NIST 1:N).

    mated_scores, mated_ranks [M]: each mated search's best mated score and its rank; non_mated_top [N]:
    each non-mated search's highest score. A search raises an alarm when its top score is strictly above
    the threshold t. With the non-mated tops sorted decreasing s_0 >= s_1 >= ..., k = floor(fpir x N) and
    t = s_k: the lowest threshold at which at most k non-mated searches (a fraction <= fpir) alarm, the
    project's TAR@FAR rule (`evaluation.protocol.tar_at_far`). TPIR = the fraction of mated searches whose
    mate is rank 1 and scores above t. None where fpir x N < 1 or M = 0; the rank-1 rate where k >= N.
    """
    mated_scores = np.asarray(mated_scores, dtype=np.float64).reshape(-1)
    hits = np.asarray(mated_ranks).reshape(-1) == 1
    descending = np.sort(np.asarray(non_mated_top, dtype=np.float64).reshape(-1))[::-1]
    out: dict[str, float | None] = {}
    for fpir in fpirs:
        k = math.floor(fpir * descending.size + 1e-9)
        if k < 1 or mated_scores.size == 0:
            out[far_key(fpir)] = None
        elif k >= descending.size:
            out[far_key(fpir)] = float(np.mean(hits))
        else:
            out[far_key(fpir)] = float(np.mean(hits & (mated_scores > descending[k])))
    return out


def insightface_tpir(mated_scores: np.ndarray, non_mated_largest: np.ndarray, non_mated_count: int,
                     fpirs: Sequence[float] = FPIRS) -> dict[str, float | None]:
    """TPIR@FPIR as insightface's IJB_1N.py computes it on its closed set of Q probes.

    mated_scores [Q]: each probe's score with its mate; non_mated_largest: the highest non-mated
    probe-gallery comparison scores, decreasing (at least ceil(Q x fpir) of them where there are that many);
    non_mated_count: how many non-mated comparisons there are (Q x G - Q there). The threshold is the
    ceil(Q x fpir)-th highest non-mated comparison score, so about fpir x Q comparisons (not searches)
    score above it; TPIR = the fraction of probes whose mated score is strictly above it, whatever its
    rank. None where ceil(Q x fpir) exceeds the number of non-mated comparisons, or Q = 0.
    """
    mated_scores = np.asarray(mated_scores, dtype=np.float64).reshape(-1)
    largest_scores = np.asarray(non_mated_largest, dtype=np.float64).reshape(-1)
    out: dict[str, float | None] = {}
    for fpir in fpirs:
        position = math.ceil(mated_scores.size * fpir - 1e-9)
        if mated_scores.size == 0 or position < 1 or position > non_mated_count:
            out[far_key(fpir)] = None
            continue
        if position > largest_scores.size:
            raise ValueError(f"{largest_scores.size} non-mated scores kept, the rule needs the {position}-th")
        out[far_key(fpir)] = float(np.mean(mated_scores > largest_scores[position - 1]))
    return out


# ---- the record ---------------------------------------------------------------------------------------------

def _features(lists: SubjectList, template_ids: np.ndarray, unit_feats: np.ndarray) -> np.ndarray:
    return np.asarray(unit_feats)[template_rows(template_ids, lists.templates)]


def open_set_record(probes: SubjectList, gallery: SubjectList, template_ids: np.ndarray, unit_feats: np.ndarray,
                    chunk: int = PROBE_CHUNK) -> dict[str, Any]:
    """One gallery searched by every probe (module docstring, per gallery): counts, CMC and TPIR@FPIR."""
    outcome = search_gallery(_features(probes, template_ids, unit_feats), probes.subjects,
                             _features(gallery, template_ids, unit_feats), gallery.subjects, chunk=chunk)
    mated = outcome.rank > 0
    return {"gallery_templates": int(gallery.templates.size), "probes": int(probes.templates.size),
            "mated": int(mated.sum()), "non_mated": int((~mated).sum()), **cmc(outcome.rank[mated]),
            "tpir_at_fpir": open_set_tpir(outcome.best_mated[mated], outcome.rank[mated],
                                          outcome.top_non_mated[~mated])}


def insightface_record(probes: SubjectList, galleries: list[SubjectList], template_ids: np.ndarray,
                       unit_feats: np.ndarray, chunk: int = PROBE_CHUNK) -> dict[str, Any]:
    """Both galleries as one, searched by the probes enrolled there (module docstring, `G1+G2`)."""
    gallery_templates = np.concatenate([g.templates for g in galleries])
    gallery_subjects = np.concatenate([g.subjects for g in galleries])
    enrolled = np.isin(probes.subjects, gallery_subjects)
    if not enrolled.all():
        log.warning("%s: %d of %d probe templates have no subject in the galleries; insightface's closed-set "
                    "reading leaves them out", probes.path.name, int((~enrolled).sum()), enrolled.size)
    probe_feats = _features(probes, template_ids, unit_feats)[enrolled]
    gallery_feats = np.asarray(unit_feats)[template_rows(template_ids, gallery_templates)]
    keep = math.ceil(int(enrolled.sum()) * max(FPIRS))
    outcome = search_gallery(probe_feats, probes.subjects[enrolled], gallery_feats, gallery_subjects, keep, chunk)
    return {"gallery_templates": int(gallery_templates.size), "probes": int(enrolled.sum()), **cmc(outcome.rank),
            "tpir_at_fpir": insightface_tpir(outcome.best_mated, outcome.non_mated_largest, outcome.non_mated_count)}


def identification_record(lists: SearchLists, template_ids: np.ndarray, unit_feats: np.ndarray,
                          chunk: int = PROBE_CHUNK) -> dict[str, Any]:
    """The `identification` entry of an IJB set's record: each gallery's open-set record by gallery name,
    and insightface's reading under the two names joined by "+" (`G1+G2`).

    template_ids: sorted int64 [T] and unit_feats float32 [T, D], the 1:1 template features.
    """
    record: dict[str, Any] = {name: open_set_record(lists.probes, gallery, template_ids, unit_feats, chunk)
                              for name, gallery in lists.galleries.items()}
    record["+".join(lists.galleries)] = insightface_record(lists.probes, list(lists.galleries.values()),
                                                           template_ids, unit_feats, chunk)
    return record
