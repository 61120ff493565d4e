"""Held-out pairs of the rich set that no LFW-only student trained on: what does richer data buy?

    python bench/rich_vs_lfw.py --rich-split <DIR>/split --lfw-split <LFW>/split [--lfw ../shared/data/lfw_devtrain]

`<DIR>/split` is `python cli.py split` of the rich set (bench/rich_set.py; identity folders named by person),
`<LFW>/split` a split of LFW DevTrain (`data.format = "rec"`; its lists name images by the `.rec` label, and
the set's `names.txt` gives the person). Writes `<DIR>/split/heldout/heldout_without_lfw_train.txt`: the
rich split's held-out pairs (`heldout/pairs.txt`) without every pair that names a person among the LFW
split's training people, so students trained on either set are scored on people neither saw. Evaluate them
side by side with

    python cli.py evaluate --config bench/sweeps/lfw_user.toml --set run.dir=<OUT> \\
        --set 'eval.model=["teacher", "<LFW student>/backbone.pth", "<rich student>/backbone.pth"]' \\
        --set 'eval.pairs=["<DIR>/split/heldout/heldout_without_lfw_train.txt"]' --set eval.root=<DIR>/split/heldout

Last stdout line: JSON with the counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import preamble
from preamble import REPO


def identity_names(list_file: Path, by_label: list[str] | None = None) -> dict[str, str]:
    """`id_<label:05d>` -> person, from a split's list file (`path label` lines): the image's folder name in
    the rich set, `names.txt[label]` for an LFW `.rec` split (`by_label`)."""
    out: dict[str, str] = {}
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        path, label = line.rsplit(maxsplit=1)
        out[f"id_{int(label):05d}"] = by_label[int(label)] if by_label else Path(path).parent.name
    return out


def main() -> None:
    ap = preamble.parser(__doc__)
    ap.add_argument("--rich-split", type=preamble.existing, required=True)
    ap.add_argument("--lfw-split", type=preamble.existing, required=True)
    ap.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "data" / "lfw_devtrain")
    args = ap.parse_args()
    lfw_names = (args.lfw / "names.txt").read_text().split()
    lfw_train = set(identity_names(args.lfw_split / "train.lst", lfw_names).values())
    held = identity_names(args.rich_split / "heldout.lst")
    dropped = {i for i, name in held.items() if name in lfw_train}
    lines = (args.rich_split / "heldout" / "pairs.txt").read_text().splitlines()
    header, pairs = lines[0], [ln for ln in lines[1:] if ln.strip()]
    kept = [ln for ln in pairs if not {t for t in ln.split() if t.startswith("id_")} & dropped]
    out = args.rich_split / "heldout" / "heldout_without_lfw_train.txt"
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text("\n".join([header, *kept]) + "\n")
    tmp.replace(out)
    print(json.dumps({"heldout_identities": len(held), "dropped_identities": sorted(held[i] for i in dropped),
                      "pairs": len(pairs), "kept_pairs": len(kept), "out": str(out)}))


if __name__ == "__main__":
    main()
