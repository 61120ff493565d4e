"""Rebuild the raw photo sets `align` was checked on from checkouts of their public repositories.

    python bench/photo_sets.py celeba --repo <git dir of matush97/faceRecognition> --out DIR
    python bench/photo_sets.py cfp --repo <git dir of zhangjunh/DR-GAN-by-pytorch> --out DIR

`--repo` is a git directory or a working tree (the files are read with `git archive HEAD`).

- celeba: the 6,300 in-the-wild CelebA photos of folder `Celeb/` and their identities from
  `identity_CelebA.txt` -> `DIR/Celeb/<file>.jpg` and the list file `DIR/celeba.lst` (`Celeb/<file> <id>`).
- cfp: CFP (Celebrities in Frontal-Profile; 500 people x 10 frontal + 4 profile photos, `cfp-dataset/`)
  -> `DIR/photos/<id>/<id>_<NNNN>.jpg` (frontal 01..10 as 0001..0010, profile 01..04 as 0011..0014) and
  `DIR/pairs_fp.txt`, the frontal-profile protocol (`Protocol/Split/FP/01..10`, 350 same + 350 different
  pairs each, 7,000 in all; pair lists `Protocol/Pair_list_F.txt` and `Pair_list_P.txt`) as an LFW-style
  pair file in that fold order, for `align` then `convert pairs_fp.txt cfp_fp.bin --root <aligned>`.

Identities in `../shared/data/lfw_devtest_people.txt` (reserved) are dropped by name where a set has
names; neither of these has LFW names (CelebA identities are numbers, CFP's are numbered folders).
"""
from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import preamble

FRONTAL, PROFILE = 10, 4


def _archive(repo: Path, paths: list[str]) -> tarfile.TarFile:
    git = ["git", "--git-dir", str(repo)] if (repo / "HEAD").is_file() else ["git", "-C", str(repo)]
    data = subprocess.run([*git, "archive", "--format=tar", "HEAD", *paths], check=True, capture_output=True).stdout
    return tarfile.open(fileobj=io.BytesIO(data))


def celeba(repo: Path, out: Path) -> None:
    with _archive(repo, ["Celeb", "identity_CelebA.txt"]) as tar:
        tar.extractall(out, filter="data")
    identity = dict(line.split() for line in (out / "identity_CelebA.txt").read_text().splitlines()[1:] if line)
    photos = sorted(p.name for p in (out / "Celeb").iterdir())
    lines = [f"Celeb/{name} {identity[name]}" for name in photos]
    (out / "celeba.lst").write_text("\n".join(lines) + "\n")
    print(f"{len(photos)} photos of {len({identity[n] for n in photos})} identities -> {out / 'celeba.lst'}")


def _pair_list(text: str) -> dict[int, tuple[str, str]]:
    """`k ../Data/Images/<id>/<frontal|profile>/<nn>.jpg` -> k -> (id, <id>_<NNNN>)."""
    table = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        k, path = line.split()
        person, pose, nn = path.split("/")[-3:]
        number = int(nn.split(".")[0]) + (FRONTAL if pose == "profile" else 0)
        table[int(k)] = (person, f"{person}_{number:04d}")
    return table


def cfp(repo: Path, out: Path) -> None:
    raw = out / "raw"
    with _archive(repo, ["cfp-dataset"]) as tar:
        tar.extractall(raw, filter="data")
    root = raw / "cfp-dataset"
    photos = out / "photos"
    count = 0
    for split in ("train", "test"):  # the repository keeps people 001-450 under train/, 451-500 under test/
        for person in sorted((root / "Data" / "Images" / split).iterdir()):
            for pose, offset in (("frontal", 0), ("profile", FRONTAL)):
                for src in sorted((person / pose).iterdir()):
                    dst = photos / person.name / f"{person.name}_{int(src.stem) + offset:04d}.jpg"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(src.read_bytes())
                    count += 1
    frontal = _pair_list((root / "Protocol" / "Pair_list_F.txt").read_text())
    profile = _pair_list((root / "Protocol" / "Pair_list_P.txt").read_text())
    lines: list[str] = []
    per_fold = 0
    for fold in range(1, 11):
        for kind in ("same", "diff"):
            rows = (root / "Protocol" / "Split" / "FP" / f"{fold:02d}" / f"{kind}.txt").read_text().split()
            if kind == "same":
                per_fold = len(rows)
            for row in rows:
                (pa, na), (pb, nb) = frontal[int(row.split(",")[0])], profile[int(row.split(",")[1])]
                ia, ib = int(na.rsplit("_", 1)[1]), int(nb.rsplit("_", 1)[1])
                lines.append(f"{pa}\t{ia}\t{ib}" if pa == pb else f"{pa}\t{ia}\t{pb}\t{ib}")
    (out / "pairs_fp.txt").write_text(f"10\t{per_fold}\n" + "\n".join(lines) + "\n")
    print(f"{count} photos of {len(list(photos.iterdir()))} people -> {photos}; {len(lines)} pairs -> "
          f"{out / 'pairs_fp.txt'}")


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("set", choices=("celeba", "cfp"))
    ap.add_argument("--repo", type=preamble.existing, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (celeba if args.set == "celeba" else cfp)(args.repo, args.out)


if __name__ == "__main__":
    main()
