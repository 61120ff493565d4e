"""A real training set with many images per identity, rebuilt from public checkouts and the shared LFW set.

    python bench/photo_sets.py celeba --repo <matush97/faceRecognition checkout> --out <CELEBA>
    python cli.py align <CELEBA>/celeba.lst <CELEBA>/aligned --workers 2 --set 'align.pick="largest"' \\
        --set run.dir=<CELEBA>/run
    python bench/rich_set.py --celeba <CELEBA>/aligned --glint <ElisonSherton/Face-Applications checkout> \\
        --out <RICH> [--lfw ../shared/data/lfw_devtrain] [--min-images 5]

Writes `<RICH>/faces/<identity>/<image>` (aligned 112x112 faces as their stored bytes) and
`<RICH>/counts.json`:

- CelebA (`Celeb/` of `matush97/faceRecognition`, aligned by `align` with `pick = "largest"`):
  identity `celeba_<id>` (CelebA's numeric identity; CelebA gives no names);
- the Glint360K sample of `ElisonSherton/Face-Applications` (`datasets/celebrity_images/<Name>/`, faces
  already aligned at 112): identity `<Name>` with spaces as underscores (LFW's spelling);
- LFW DevTrain people with at least `--min-images` images (the shipped `.rec` and `names.txt`).

A person in both Glint and LFW (same name) is one identity. Every identity named in
`../shared/data/lfw_devtest_people.txt` is dropped (reserved as an outside check). CelebA's people have
no names, so a CelebA identity that is also a Glint or LFW person cannot be found and stays separate.
Identities with fewer than `--min-images` images are dropped from every source.
"""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import preamble
from preamble import REPO

from readers.recordio import RecordIODataset

SHARED = REPO.parent / "shared" / "data"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _git_archive(repo: Path, path: str) -> tarfile.TarFile:
    git = ["git", "--git-dir", str(repo)] if (repo / "HEAD").is_file() else ["git", "-C", str(repo)]
    data = subprocess.run([*git, "archive", "--format=tar", "HEAD", path], check=True, capture_output=True).stdout
    return tarfile.open(fileobj=io.BytesIO(data))


def celeba_faces(aligned: Path) -> dict[str, list[tuple[str, bytes]]]:
    """`align`'s output of celeba.lst: identity folders named by CelebA's numeric label."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    for person in sorted(p for p in aligned.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        out[f"celeba_{person.name}"] = [(f.name, f.read_bytes()) for f in files]
    return out


def glint_faces(repo: Path) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list[tuple[str, bytes]]] = {}
    with _git_archive(repo, "datasets/celebrity_images") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or not parts[3].lower().endswith(IMAGE_SUFFIXES):
                continue
            data = tar.extractfile(member)
            assert data is not None
            out.setdefault(parts[2].replace(" ", "_"), []).append((f"glint_{parts[3]}", data.read()))
    return {k: sorted(v) for k, v in sorted(out.items())}


def lfw_faces(root: Path) -> dict[str, list[tuple[str, bytes]]]:
    names = (root / "names.txt").read_text().split()
    rec = RecordIODataset(root, 112)
    out: dict[str, list[tuple[str, bytes]]] = {}
    for k in range(len(rec)):
        name = names[int(rec.labels[k])]
        out.setdefault(name, []).append((f"lfw_{len(out.get(name, [])) + 1:04d}.jpg", rec.encoded(k)))
    return out


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--celeba", type=preamble.existing, required=True, help="align's output folder of celeba.lst")
    ap.add_argument("--glint", type=preamble.existing, required=True,
                    help="checkout or git dir of ElisonSherton/Face-Applications")
    ap.add_argument("--lfw", type=Path, default=SHARED / "lfw_devtrain")
    ap.add_argument("--devtest", type=Path, default=SHARED / "lfw_devtest_people.txt")
    ap.add_argument("--min-images", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    reserved = set(args.devtest.read_text().split())
    sources = {"celeba": celeba_faces(args.celeba), "glint": glint_faces(args.glint), "lfw": lfw_faces(args.lfw)}
    merged: dict[str, list[tuple[str, bytes]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for source, people in sources.items():
        dropped = sorted(p for p in people if p in reserved)
        kept = {p: faces for p, faces in people.items() if p not in reserved}
        for person, faces in kept.items():
            merged.setdefault(person, []).extend(faces)
        counts[source] = {"identities": len(people), "images": sum(map(len, people.values())),
                          "dropped_reserved": len(dropped)}
    both = sorted(set(sources["glint"]) & set(sources["lfw"]) - reserved)
    final = {p: faces for p, faces in merged.items() if len(faces) >= args.min_images}
    faces_dir = args.out / "faces"
    if faces_dir.exists():
        raise SystemExit(f"{faces_dir} exists; remove it first")
    for person, faces in final.items():
        (faces_dir / person).mkdir(parents=True)
        for name, data in faces:
            (faces_dir / person / name).write_bytes(data)
    per = sorted(len(f) for f in final.values())
    summary = {"sources": counts, "merged_glint_lfw": both, "min_images": args.min_images,
               "identities": len(final), "images": sum(per), "median_images": per[len(per) // 2],
               "max_images": per[-1], "by_source": dict(Counter(p.split("_")[0] if p.startswith("celeba_")
                                                                 else ("glint" if p in sources["glint"] else "lfw")
                                                                 for p in final))}
    (args.out / "counts.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
