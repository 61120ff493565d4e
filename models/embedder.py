"""Teacher embedders: uint8 RGB images in, float32 embeddings out, for torch, TorchScript and ONNX models.

Preprocessing (shared by all): resize to `input_size` (bilinear) if the images differ, reorder colour
channels to the model's order, model input = (pixel/255 - mean)/std per model channel, then the
model's layout (NCHW or NHWC). mean 0.5 / std 0.5 is the insightface default; mean 0 / std 1/255
feeds raw 0..255 pixel values.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError
from config.choices import COLOR_ORDERS, INPUT_LAYOUTS, check_choice
from models.device import resolve_device
from models.loading import sha256_file
from models.onnx_metadata import read_preprocessing
from models.preprocess import INSIGHTFACE_MEAN, INSIGHTFACE_STD, flip_fuse, hflip, normalize_pixels
from models.size import onnx_size, parameter_count, torch_flops

PROBE_PIXEL = 128
ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def resize_bilinear(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of float [B, C, H, W] to [B, C, size, size]."""
    if pixels.shape[-2:] == (size, size):
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def as_image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Check and return a uint8 CPU tensor [B, H, W, 3]."""
    batch = torch.as_tensor(images).cpu()
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {batch.dtype} {tuple(batch.shape)}")
    return batch


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB images become model input; `prefix` is put before field names in error messages."""

    input_size: int
    layout: str = "NCHW"
    color: str = "RGB"
    mean: tuple[float, ...] = INSIGHTFACE_MEAN
    std: tuple[float, ...] = INSIGHTFACE_STD
    prefix: str = ""

    def __post_init__(self) -> None:
        p = self.prefix
        check_choice(self.layout, INPUT_LAYOUTS, f"{p}input_layout")
        check_choice(self.color, COLOR_ORDERS, f"{p}color")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3:
                raise ConfigError(f"{p}{name} must have 3 values (one per channel), got {list(values)}")
        if any(float(s) == 0.0 for s in self.std):
            raise ConfigError(f"{p}std must be non-zero, got {list(self.std)}")
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 1:
            raise ConfigError(f"{p}input_size must be a positive integer, got {self.input_size!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def describe(self) -> dict[str, Any]:
        return {"layout": self.layout, "color": self.color, "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] RGB -> float32 model input [B, 3, S, S] (NCHW) or [B, S, S, 3] (NHWC)."""
        pixels = resize_bilinear(images.permute(0, 3, 1, 2).float(), self.input_size)
        if self.color == "BGR":
            pixels = pixels.flip(1)
        x = normalize_pixels(pixels, self.mean, self.std)
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return x.contiguous()


def embedding_matrix(out: torch.Tensor, batch: int, source: str) -> torch.Tensor:
    """A model output as embeddings [batch, D]: rank 2 as is, [batch, D, 1, ...] squeezed.

    Any other shape (rank 1, a trailing dimension other than 1, a wrong batch size) is a ConfigError
    naming `source` and the shape: flattening [B, 4, 2] into 8-d "embeddings" would hide a wrong model
    or output.
    """
    shape = list(out.shape)
    if out.dim() >= 2 and shape[0] == batch and all(d == 1 for d in shape[2:]):
        return out.reshape(batch, shape[1])
    raise ConfigError(f"{source}: model output has shape {shape} for a batch of {batch}; expected "
                      "[batch, embedding_size] (trailing dimensions of size 1, as in [batch, D, 1, 1], are squeezed)")


class Embedder(abc.ABC):
    """A frozen model mapping uint8 RGB images [B, H, W, 3] to un-normalised float32 embeddings [B, D].

    The model output must be [B, D]; [B, D, 1, ..., 1] is squeezed to it and any other shape is a
    ConfigError naming `source` (see `embedding_matrix`).
    """

    embedding_size: int

    def __init__(self, arch: str, weights_sha256: str, preprocessing: Preprocessing, source: str = "") -> None:
        self.arch = arch
        self.weights_sha256 = weights_sha256
        self.preprocessing = preprocessing
        self.source = source or f"model {arch!r}"
        self.embedding_size = self.probe_dim()

    @abc.abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed float32 input (model layout) -> model output [B, ...]."""

    def embed(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 RGB [B, H, W, 3] -> float32 [B, D] on CPU, not L2-normalised."""
        batch = as_image_batch(images)
        if batch.shape[0] == 0:
            return torch.zeros(0, self.embedding_size)
        out = self._forward(self.preprocessing(batch))
        return embedding_matrix(out.detach(), batch.shape[0], self.source).float().cpu()

    def embed_views(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw embeddings of the images and of their horizontal flips: uint8 [B, H, W, 3] -> [B, 2, D] float32.

        One forward pass over the 2B images (the batch, then its flips), as a GPU runs best; the model
        is in eval mode, so each image's embedding does not depend on the others in the batch.
        """
        batch = as_image_batch(images)
        out = self.embed(torch.cat([batch, hflip(batch)]))
        return torch.stack([out[:len(batch)], out[len(batch):]], dim=1)

    def embed_fused(self, images: np.ndarray, batch_size: int,
                    advance: Callable[[int], Any] | None = None) -> np.ndarray:
        """The verification embedding `flip_fuse` of every image, in batches: uint8 [n, H, W, 3] -> [n, D];
        `advance(k)` (a progress bar's `update`) is called after each batch of k images."""
        out = [np.zeros((0, self.embedding_size), np.float32)]
        for s in range(0, len(images), batch_size):
            views = self.embed_views(np.ascontiguousarray(images[s:s + batch_size]))
            out.append(flip_fuse(views[:, 0], views[:, 1]).numpy())
            if advance is not None:
                advance(len(views))
        return np.concatenate(out)

    def size(self) -> dict[str, int | None]:
        """`{"parameters", "flops"}` of the model (`models.size`; FLOPs of one image at its input side), None
        where it cannot be counted."""
        return {"parameters": None, "flops": None}

    def probe_dim(self) -> int:
        """Embedding size measured on one mid-grey image."""
        size = self.preprocessing.input_size
        return int(self.embed(torch.full((1, size, size, 3), PROBE_PIXEL, dtype=torch.uint8)).shape[1])

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the teacher for cache fingerprints: arch, weights hash, input size, preprocessing."""
        return {
            "arch": self.arch,
            "weights_sha256": self.weights_sha256,
            "input_size": self.preprocessing.input_size,
            "preprocessing": self.preprocessing.describe(),
        }


class TorchEmbedder(Embedder):
    """An `nn.Module` (put in eval mode, run under `torch.inference_mode`) on `device`."""

    def __init__(self, module: nn.Module, arch: str, weights_sha256: str, input_size: int,
                 mean: Sequence[float] = INSIGHTFACE_MEAN, std: Sequence[float] = INSIGHTFACE_STD,
                 color: str = "RGB", device: str | torch.device = "cpu", layout: str = "NCHW",
                 prefix: str = "", source: str = "") -> None:
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)
        super().__init__(arch, weights_sha256,
                         Preprocessing(input_size, layout, color, tuple(mean), tuple(std), prefix), source)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(batch.to(self.device))

    def size(self) -> dict[str, int | None]:
        try:
            flops: int | None = torch_flops(self.module, self.preprocessing.input_size, self.device)
        except Exception:  # a module the flop counter cannot trace (some TorchScript graphs)
            flops = None
        return {"parameters": parameter_count(self.module), "flops": flops}


def _require_file(path: str | Path, key: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key} {str(path)!r} does not exist")
    return path


class TorchScriptEmbedder(TorchEmbedder):
    """A TorchScript file loaded with `torch.jit.load`."""

    def __init__(self, path: str | Path, input_size: int, mean: Sequence[float] = INSIGHTFACE_MEAN,
                 std: Sequence[float] = INSIGHTFACE_STD, color: str = "RGB", device: str | torch.device = "cpu",
                 layout: str = "NCHW", arch: str = "torchscript", prefix: str = "") -> None:
        path = _require_file(path, f"{prefix}weights")
        try:
            module = torch.jit.load(str(path), map_location=resolve_device(device))
        except Exception as err:
            raise ConfigError(f"{prefix}weights {str(path)!r} is not a TorchScript file: {err}") from err
        super().__init__(module, arch, sha256_file(path), input_size, mean, std, color, device, layout, prefix,
                         source=f"{prefix}weights {str(path)!r}")


def check_against_metadata(given: dict[str, Any], stored: dict[str, Any], prefix: str, path: str) -> None:
    """ConfigError naming each key whose given value differs from an exported model's metadata (input_size 0
    means "the model's own" and always agrees)."""
    wrong = [f"{prefix}{k} = {v!r} but the model's metadata says {stored[k]!r}" for k, v in given.items()
             if v != stored[k] and not (k == "input_size" and v == 0)]
    if wrong:
        raise ConfigError(f"ONNX model {path!r} states its own preprocessing: " + "; ".join(wrong)
                          + " (set those keys to the model's values)")


class OnnxEmbedder(Embedder):
    """An ONNX model run by onnxruntime (CUDA provider when available and `device` is CUDA, else CPU).

    The input name, layout check, spatial size and batch dimension are read from the session; a fixed
    batch dimension is served in padded chunks, a dynamic one in one call. The first output must be
    [B, D]; [B, D, 1, 1] (trailing dimensions all 1) is squeezed, any other rank is refused with a
    ConfigError naming the file and the output shape (checked on the construction probe). `input_size` 0 takes the
    model's fixed spatial size, or `default_input_size` when the model's spatial size is dynamic.

    A model written by `export` describes its own preprocessing in its metadata (`models.onnx_metadata`).
    With `metadata_first` (evaluation) it takes precedence over the layout, colour, mean, std and input
    size given here (`from_metadata`); without (the teacher, whose keys the cache fingerprint records) a
    given value that differs from the metadata is a ConfigError naming the key.
    """

    def __init__(self, path: str | Path, input_layout: str = "NCHW", color: str = "RGB",
                 mean: Sequence[float] = INSIGHTFACE_MEAN, std: Sequence[float] = INSIGHTFACE_STD,
                 input_size: int = 0, device: str | torch.device = "cpu", arch: str = "onnx",
                 prefix: str = "", default_input_size: int = 0, metadata_first: bool = False) -> None:
        import onnxruntime as ort

        path = _require_file(path, f"{prefix}weights")
        self.path = path
        self.providers = ["CPUExecutionProvider"]
        if resolve_device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            self.providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=self.providers)
        except Exception as err:
            raise ConfigError(f"{prefix}weights {str(path)!r} is not a loadable ONNX model: {err}") from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"{prefix}weights {str(path)!r}: expected one image input, model has {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name
        stored = read_preprocessing(self.session.get_modelmeta().custom_metadata_map, f"ONNX model {str(path)!r}")
        self.from_metadata = stored is not None and metadata_first
        if stored is not None and metadata_first:
            input_size, input_layout, color = stored["input_size"], stored["input_layout"], stored["color"]
            mean, std = stored["mean"], stored["std"]
        elif stored is not None:
            given = {"input_size": input_size, "input_layout": input_layout, "color": color,
                     "mean": [float(m) for m in mean], "std": [float(v) for v in std]}
            check_against_metadata(given, stored, prefix, str(path))
        shape = list(inputs[0].shape)
        if inputs[0].type not in ONNX_DTYPES:
            raise ConfigError(f"{prefix}weights {str(path)!r}: unsupported input type {inputs[0].type}")
        self.input_dtype = ONNX_DTYPES[inputs[0].type]
        size = self._check_shape(shape, input_layout, input_size, prefix) or default_input_size
        if not size:
            raise ConfigError(f"{prefix}input_size must be set: the model input {shape} has no fixed size")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 0
        super().__init__(arch, sha256_file(path),
                         Preprocessing(size, input_layout, color, tuple(mean), tuple(std), prefix),
                         source=f"{prefix}weights {str(path)!r} (output {self.output_name!r})")

    def _check_shape(self, shape: list[Any], layout: str, input_size: int, prefix: str) -> int:
        """Validate the session's input shape against the layout; return the input side (0: dynamic, unset)."""
        if len(shape) != 4:
            raise ConfigError(f"{prefix}weights: model input {self.input_name!r} has shape {shape}, expected 4-D")
        check_choice(layout, INPUT_LAYOUTS, f"{prefix}input_layout")
        channels, height, width = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
        if isinstance(channels, int) and channels != 3:
            raise ConfigError(f"{prefix}input_layout {layout!r} does not match model input {self.input_name!r} "
                              f"shape {shape}: channel dimension is {channels}, expected 3")
        fixed = [d for d in (height, width) if isinstance(d, int) and d > 0]
        if len(fixed) == 2 and height != width:
            raise ConfigError(f"{prefix}weights: non-square model input {shape} is not supported")
        if input_size:
            if fixed and fixed[0] != input_size:
                raise ConfigError(f"{prefix}input_size {input_size} differs from the model's input side "
                                  f"{fixed[0]} (shape {shape})")
            return input_size
        return fixed[0] if fixed else 0

    def size(self) -> dict[str, int | None]:
        return onnx_size(self.path)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.numpy().astype(self.input_dtype, copy=False)
        if not self.fixed_batch:
            return torch.from_numpy(np.asarray(self.session.run([self.output_name], {self.input_name: x})[0]))
        outputs = []
        for start in range(0, x.shape[0], self.fixed_batch):
            chunk = x[start:start + self.fixed_batch]
            count = chunk.shape[0]
            if count < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - count, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            out = np.asarray(self.session.run([self.output_name], {self.input_name: chunk})[0])
            outputs.append(out[:count])
        return torch.from_numpy(np.concatenate(outputs))
