"""`cli.py align`: photos -> aligned faces through the command line; resume after a kill, refusals, the
detector path (dlib, when the `align` extra is installed) and the shipped LFW faces (with ../shared)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stages.align
from alignment.warp import ARCFACE_TEMPLATE, align_face
from readers import FolderDataset
from readers.recordio import RecordIODataset
from tests.alignment.test_warp import apply, forward_warp, similarity, smooth_image
from tests.conftest import REPO, SHARED, invoke

RAW = SHARED / "data" / "lfw_devtrain_raw" / "images"
SHIPPED = SHARED / "data" / "lfw_devtrain"


def photo_set(root: Path, identities: int = 3, per_identity: int = 3, side: int = 160,
              fmt: str = "png") -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Photos of a smooth 'face' at a known similarity each, and their IJB-style landmark file.

    Returns (photo folder, landmark file, photo key -> landmarks). The last photo has no landmark line."""
    rng = np.random.default_rng(0)
    face = smooth_image(112, 112)
    photos, lines, truth = root / "photos", [], {}
    for i in range(identities):
        for j in range(per_identity):
            m = similarity(rng.uniform(0.9, 1.3), rng.uniform(-20, 20), rng.uniform(10, 30), rng.uniform(10, 30))
            key = f"person_{i}/photo_{j}.{'png' if fmt == 'png' else 'jpg'}"
            (photos / key).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(forward_warp(face, m, (side, side))).save(photos / key)
            points = np.round(apply(m, ARCFACE_TEMPLATE), 4)  # as written below
            truth[key] = points
            lines.append(" ".join([key, *(f"{v:.4f}" for v in points.ravel()), "0.99"]))
    landmarks = root / "landmarks.txt"
    landmarks.write_text("\n".join(lines[:-1]) + "\n")
    return photos, landmarks, truth


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_given_landmarks_give_the_building_block_s_faces_a_manifest_and_a_loadable_folder(tmp_path: Path) -> None:
    photos, landmarks, truth = photo_set(tmp_path)
    out = tmp_path / "aligned"
    code, text, summary = invoke("align", [f"run.dir={tmp_path / 'run'}"], str(photos), str(out),
                                 "--landmarks", str(landmarks), "--workers", "0")
    assert code == 0, text
    assert summary is not None and summary["images"] == 9 and summary["aligned"] == 8
    assert summary["skipped"] == {"no_landmarks": 1} and summary["detectors"] == {"landmarks": 8}
    assert summary["manifest"] == str(out / "manifest.jsonl") and Path(summary["sheets"][0]).is_file()
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["source"] for r in records] == sorted(truth)
    for r in records[:-1]:
        photo = np.asarray(Image.open(photos / r["source"]).convert("RGB"))
        expected = align_face(photo, truth[r["source"]])
        assert np.array_equal(np.asarray(Image.open(out / r["output"])), expected)
        assert r["residual"] < 1e-2 and len(r["matrix"]) == 2
    assert records[-1]["status"] == "skipped" and records[-1]["output"] is None
    faces = FolderDataset(out, 112)
    assert len(faces) == 8 and faces.num_classes == 3
    assert json.loads((tmp_path / "run" / "align.json").read_text())["aligned"] == 8
    assert not list(tmp_path.glob(".aligned*"))  # the partial folder took the final name


def test_an_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    photos, landmarks, _ = photo_set(tmp_path, identities=1)
    out = tmp_path / "aligned"
    args = [str(photos), str(out), "--landmarks", str(landmarks), "--workers", "0"]
    assert invoke("align", [f"run.dir={tmp_path / 'run'}"], *args)[0] == 0
    (out / "mine.txt").write_text("keep")
    code, text, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], *args)
    assert code == 2 and "exists" in text and "--overwrite" in text and "Traceback" not in text
    assert (out / "mine.txt").read_text() == "keep"
    code, text, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], *args, "--overwrite")
    assert code == 0, text
    assert not (out / "mine.txt").exists()
    code, text, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], str(photos), str(photos / "inside"),
                           "--landmarks", str(landmarks))
    assert code == 2 and "outside SOURCE" in text


def test_an_interrupted_run_continues_to_the_same_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos, landmarks, _ = photo_set(tmp_path, identities=3, per_identity=4)
    clean = tmp_path / "clean"
    assert invoke("align", [f"run.dir={tmp_path / 'run1'}"], str(photos), str(clean),
                  "--landmarks", str(landmarks), "--workers", "0")[0] == 0
    out = tmp_path / "resumed"
    real_write = stages.align.atomic_write_bytes
    calls = {"n": 0}

    def dies_at_the_fifth_face(path: Path, data: bytes, durable: bool = True) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as a kill between two faces
        real_write(path, data, durable)

    monkeypatch.setattr(stages.align, "atomic_write_bytes", dies_at_the_fifth_face)
    code, _, _ = invoke("align", [f"run.dir={tmp_path / 'run2'}"], str(photos), str(out),
                        "--landmarks", str(landmarks), "--workers", "0")
    assert code == 1 and calls["n"] == 5  # click turns the interrupt into "Aborted!"
    monkeypatch.undo()
    partial = tmp_path / ".resumed.align-partial"
    assert not out.exists() and partial.is_dir()
    with open(partial / stages.align.JOURNAL, "a") as fh:
        fh.write('{"index": 7, "sou')  # a line cut by the kill
    code, text, summary = invoke("align", [f"run.dir={tmp_path / 'run2'}"], str(photos), str(out),
                                 "--landmarks", str(landmarks), "--workers", "0")
    assert code == 0, text
    assert summary is not None and summary["resumed"] == 4 and "continuing" in text
    assert tree(out) == tree(clean)
    assert not partial.exists()


def test_kill_9_then_rerun_gives_the_same_files(tmp_path: Path) -> None:
    photos, landmarks, _ = photo_set(tmp_path, identities=6, per_identity=10, side=640, fmt="jpeg")
    clean, out = tmp_path / "clean", tmp_path / "killed"
    base = [sys.executable, str(REPO / "cli.py"), "align", "--config", str(REPO / "pipeline.toml")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([*base, str(photos), str(clean), "--landmarks", str(landmarks), "--workers", "0",
                    "--set", f"run.dir={tmp_path / 'run1'}"], check=True, capture_output=True, env=env)
    journal = tmp_path / ".killed.align-partial" / stages.align.JOURNAL
    proc = subprocess.Popen([*base, str(photos), str(out), "--landmarks", str(landmarks), "--workers", "0",
                             "--set", f"run.dir={tmp_path / 'run2'}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run([*base, str(photos), str(out), "--landmarks", str(landmarks), "--workers", "0",
                           "--set", f"run.dir={tmp_path / 'run2'}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["resumed"] >= 3
    assert tree(out) == tree(clean)


def test_other_settings_do_not_continue_an_interrupted_run(tmp_path: Path) -> None:
    photos, landmarks, _ = photo_set(tmp_path, identities=1)
    partial = tmp_path / ".aligned.align-partial"
    partial.mkdir()
    (partial / stages.align.STATE).write_text('{"source": "elsewhere"}')
    args = [str(photos), str(tmp_path / "aligned"), "--landmarks", str(landmarks), "--workers", "0"]
    code, text, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], *args)
    assert code == 2 and "other settings" in text
    assert invoke("align", [f"run.dir={tmp_path / 'run'}"], *args, "--overwrite")[0] == 0


def test_photos_that_would_share_an_output_name_are_refused(tmp_path: Path) -> None:
    photos, landmarks, _ = photo_set(tmp_path, identities=1)
    Image.new("RGB", (50, 50)).save(photos / "person_0" / "photo_0.jpg")
    code, text, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], str(photos), str(tmp_path / "out"),
                           "--landmarks", str(landmarks))
    assert code == 2 and "photo_0.jpg" in text and "photo_0.png" in text


def test_without_the_extra_align_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos, _, _ = photo_set(tmp_path, identities=1)
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    code, text, _ = invoke("align", [f"run.dir={tmp_path / 'run'}"], str(photos), str(tmp_path / "out"))
    assert code == 2 and "pip install -e '.[align]'" in text and "Traceback" not in text
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.align-partial").exists()


def test_photos_without_a_face_are_skipped_with_the_reason_or_centre_cropped_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    photos = tmp_path / "photos" / "nobody"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(2):
        Image.fromarray(rng.integers(100, 140, (200, 240, 3), dtype=np.uint8)).save(photos / f"wall_{k}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    code, text, summary = invoke("align", [f"run.dir={tmp_path / 'run'}", "align.detector=\"hog\""],
                                 str(photos.parent), str(tmp_path / "out"), "--workers", "0")
    assert code == 0, text
    assert summary is not None and summary["aligned"] == 0
    assert summary["skipped"] == {"no_face": 2, "unreadable": 1}
    assert summary["sheets"] == [str(tmp_path / "run" / "align_sheets" / "skipped.png")]
    assert "only 0 of 3 photos gave a face" in text
    assert not (tmp_path / "out" / "nobody").exists()
    code, text, summary = invoke("align", [f"run.dir={tmp_path / 'run2'}", "align.detector=\"hog\"",
                                           "align.fallback=\"center_crop\""],
                                 str(photos.parent), str(tmp_path / "out2"), "--workers", "2")
    assert code == 0, text
    assert summary is not None and summary["fallback"] == 2 and summary["workers"] == 2
    assert Image.open(tmp_path / "out2" / "nobody" / "wall_0.png").size == (112, 112)


@pytest.mark.skipif(not RAW.is_dir() or not SHIPPED.is_dir(), reason="needs ../shared LFW DevTrain")
def test_the_defaults_reproduce_the_shipped_lfw_faces(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    people = sorted(os.listdir(RAW))
    chosen = ["Barbara_Boxer", "Aaron_Eckhart", "George_HW_Bush"]  # a CNN fallback, a plain one, 43 degrees
    src = tmp_path / "raw"
    src.mkdir()
    for name in chosen:
        (src / name).symlink_to(RAW / name)
    code, text, summary = invoke("align", [f"run.dir={tmp_path / 'run'}"], str(src), str(tmp_path / "out"),
                                 "--workers", "0")
    assert code == 0, text
    assert summary is not None and summary["skipped"] == {} and "cnn" in summary["detectors"]
    # the shipped .rec holds every person's photos in sorted order: key k is the k-th photo
    rec = RecordIODataset(SHIPPED, 112)
    first = {}
    k = 0
    for name in people:
        first[name] = k
        k += len(os.listdir(RAW / name))
    ours = FolderDataset(tmp_path / "out", 112)
    for key in ours.keys:
        name, stem = key.split("/")[0], Path(key).stem
        shipped = np.asarray(Image.open(io.BytesIO(rec.encoded(first[name] + int(stem[-4:]) - 1))))
        mine = np.asarray(Image.open(tmp_path / "out" / key))
        assert np.abs(mine.astype(float) - shipped.astype(float)).mean() < 4.0, key  # JPEG q95 against PNG


@pytest.mark.skipif(not RAW.is_dir(), reason="needs ../shared LFW DevTrain raw photos")
def test_consensus_takes_the_face_that_agrees_with_the_identity_s_other_photos(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    onnx = SHARED / "models" / "mobileface.onnx"
    if not onnx.is_file():
        pytest.skip("../shared/models/mobileface.onnx is absent")
    person = tmp_path / "photos" / "Colin_Powell"
    person.mkdir(parents=True)
    for k in (1, 2, 3):
        (person / f"solo_{k}.jpg").write_bytes((RAW / "Colin_Powell" / f"Colin_Powell_{k:04d}.jpg").read_bytes())
    # Powell on the left, Tony Blair right of the centre: the face nearest the centre is Blair's
    canvas = Image.new("RGB", (560, 250))
    canvas.paste(Image.open(RAW / "Colin_Powell" / "Colin_Powell_0004.jpg"), (0, 0))
    canvas.paste(Image.open(RAW / "Tony_Blair" / "Tony_Blair_0001.jpg"), (270, 0))
    canvas.save(person / "pair.png")
    teacher = ["teacher.arch=\"onnx\"", f"teacher.weights=\"{onnx}\"", "teacher.input_layout=\"NHWC\"",
               "teacher.mean=[0.0, 0.0, 0.0]", "teacher.std=[0.00392156862745098, 0.00392156862745098, "
               "0.00392156862745098]", "teacher.embedding_size=256", "run.device=\"cpu\""]
    outputs = {}
    for pick in ("center", "consensus"):
        out = tmp_path / pick
        code, text, summary = invoke("align", [f"run.dir={tmp_path / pick}-run", f"align.pick=\"{pick}\"",
                                               "align.center_gate=0.5", *teacher],
                                     str(tmp_path / "photos"), str(out), "--workers", "0")
        assert code == 0, text
        records = {r["source"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
        outputs[pick] = records["Colin_Powell/pair.png"]
    assert outputs["center"]["box"][0] > 270  # Blair's face
    chosen = outputs["consensus"]
    assert chosen["box"][2] < 250 and chosen["candidates"] == 2 and chosen["agreement"] > 0.3  # Powell's
