"""`cli.py convert`: the three forms through the command line, its refusals, and a .bin that loads back."""
from __future__ import annotations

from pathlib import Path

from evaluation.binfile import load_bin
from evaluation.pairs import load_pair_set
from readers import FolderDataset, RecordIODataset, SyntheticDataset, write_pair_set
from tests.conftest import invoke


def _faces(root: Path) -> Path:
    """A folder of 4 identities x 3 PNG faces and its pairs.txt (20 pairs)."""
    return Path(write_pair_set(SyntheticDataset(4, 3, 16, seed=3, difficulty=1.0), root, 20, seed=0))


def test_folder_to_rec_to_folder(tmp_path: Path) -> None:
    pairs = _faces(tmp_path / "faces")
    rec = tmp_path / "set" / "train.rec"
    code, out, summary = invoke("convert", [f"run.dir={tmp_path / 'run'}"], str(pairs.parent), str(rec))
    assert code == 0, out
    assert summary is not None and summary["images"] == 12 and summary["identities"] == 4
    assert summary["outputs"] == [str(rec), str(rec.with_suffix(".idx")), str(tmp_path / "set" / "property")]
    source = FolderDataset(pairs.parent, 16)
    code, out, _ = invoke("convert", [f"run.dir={tmp_path / 'run'}"], str(tmp_path / "set"), str(tmp_path / "back"))
    assert code == 0, out
    back = FolderDataset(tmp_path / "back", 16)
    assert [back.encoded(i) for i in range(12)] == [source.encoded(i) for i in range(12)]
    assert RecordIODataset(rec, 16).labels.tolist() == source.labels.tolist() == back.labels.tolist()
    code, out, _ = invoke("convert", [f"run.dir={tmp_path / 'run'}"], str(pairs.parent), str(rec))
    assert code == 2 and "never overwrite" in out and "Traceback" not in out


def test_pairs_to_bin(tmp_path: Path) -> None:
    pairs = _faces(tmp_path / "faces")
    out_bin = tmp_path / "faces.bin"
    code, out, summary = invoke("convert", [f"run.dir={tmp_path / 'run'}"], str(pairs), str(out_bin),
                                "--root", str(pairs.parent))
    assert code == 0, out
    assert summary is not None and summary["pairs"] == 20
    bins, issame = load_bin(out_bin)
    text = load_pair_set(pairs)
    assert issame.tolist() == text.issame.tolist()
    assert bins[::2] == [text.image_bytes(int(k)) for k in text.idx1]
    assert bins[1::2] == [text.image_bytes(int(k)) for k in text.idx2]


def test_convert_usage_errors(tmp_path: Path) -> None:
    pairs = _faces(tmp_path / "faces")
    settings = [f"run.dir={tmp_path / 'run'}"]
    for args, message in [((str(pairs.parent), str(tmp_path / "x.zip")), "cannot tell"),
                          ((str(tmp_path / "missing"), str(tmp_path / "x.rec")), "does not exist"),
                          ((str(pairs.parent), str(tmp_path / "x.rec"), "--root", str(tmp_path)), "--root"),
                          ((str(pairs), str(pairs.parent / "p.bin"), "--root", str(tmp_path)), "pairs.txt")]:
        code, out, _ = invoke("convert", settings, *args)
        assert code == 2 and message in out and "Traceback" not in out, (args, out)


def test_pairs_whose_image_is_not_an_image_are_refused_naming_the_file(tmp_path: Path) -> None:
    pairs = _faces(tmp_path / "faces")
    victim = sorted(pairs.parent.rglob("*.png"))[0]
    victim.write_bytes(b"this is a text file, not a PNG")
    out_bin = tmp_path / "faces.bin"
    code, out, _ = invoke("convert", [f"run.dir={tmp_path / 'run'}"], str(pairs), str(out_bin), "--root",
                          str(pairs.parent))
    assert code == 2 and str(victim) in out and "not an image" in out and "Traceback" not in out
    assert not out_bin.exists()


def test_a_rec_set_interrupted_before_its_rec_appeared_is_written_again(tmp_path: Path) -> None:
    pairs = _faces(tmp_path / "faces")
    rec = tmp_path / "set" / "train.rec"
    rec.parent.mkdir()
    rec.with_suffix(".idx").write_text("0\t0\n")  # what a kill between the renames leaves
    (rec.parent / "property").write_text("1,16,16\n")
    (rec.parent / ".train.rec.new").write_bytes(b"a staged .rec of the killed run")
    code, out, summary = invoke("convert", [f"run.dir={tmp_path / 'run'}"], str(pairs.parent), str(rec))
    assert code == 0, out
    assert RecordIODataset(rec, 16).labels.tolist() == FolderDataset(pairs.parent, 16).labels.tolist()
    assert (rec.parent / "property").read_text() == "4,16,16\n"
    assert sorted(p.name for p in rec.parent.iterdir()) == ["property", "train.idx", "train.rec"]
