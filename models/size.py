"""How big and how costly a face model is: parameters and floating-point operations per image.

`flops` counts one forward pass of one image at the model's input side, as PyTorch's own
`torch.utils.flop_counter.FlopCounterMode` counts them (2 per multiply-add of convolutions and matrix
products; element-wise operations, pooling and normalisation are not counted). An ONNX model is counted
by the same rule from its graph (`onnx_size`: Conv, Gemm and MatMul nodes, with the shapes of one run at
batch 1), so an ONNX teacher and a torch student compare.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

COUNTED_OPS = ("Conv", "Gemm", "MatMul")


def parameter_count(module: nn.Module) -> int:
    """Number of parameter elements of `module` (buffers such as BatchNorm statistics excluded)."""
    return int(sum(p.numel() for p in module.parameters()))


def torch_flops(module: nn.Module, input_size: int, device: torch.device | str = "cpu") -> int:
    """FLOPs of one forward pass of `module` on one [1, 3, input_size, input_size] image (eval mode, no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def onnx_size(path: str | Path) -> dict[str, int | None]:
    """`{"parameters", "flops"}` of an ONNX model file: parameters = elements of its float initializers;
    flops by `torch_flops`'s rule at batch 1 (None when shapes cannot be inferred for a counted node)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    tensors = [(t.name, t) for t in graph.initializer]  # weights: initializers, or Constant nodes (converted graphs)
    tensors += [(n.output[0], at.t) for n in graph.node if n.op_type == "Constant"
                for at in n.attribute if at.name == "value"]
    init = {name: list(t.dims) for name, t in tensors}
    params = sum(math.prod(t.dims) for _, t in tensors if t.data_type in floats)
    counted = [n for n in graph.node if n.op_type in COUNTED_OPS]
    try:
        shapes = _run_shapes(model, {name for n in counted for name in (*n.input[:2], n.output[0])} - set(init))
    except Exception:  # a graph onnxruntime cannot run at batch 1: parameters only
        return {"parameters": int(params), "flops": None}
    shapes.update(init)
    total = 0
    for node in counted:
        flops = _node_flops(node, shapes)
        if flops is None:
            return {"parameters": int(params), "flops": None}
        total += flops
    return {"parameters": int(params), "flops": int(total)}


def _run_shapes(model: Any, names: set[str]) -> dict[str, list[int]]:
    """Shapes of the graph's tensors `names` when onnxruntime runs it on one zero image (batch 1): shape
    inference cannot follow the Pad/Reshape chains of converted graphs, a run always can."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in sorted(names - present))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = np.float16 if "float16" in inp.type else np.float32
    outs = session.run(None, {inp.name: np.zeros(dims, dtype=dtype)})
    return {o.name: list(v.shape) for o, v in zip(session.get_outputs(), outs, strict=True)}


def _node_flops(node: Any, shapes: dict[str, list[int]]) -> int | None:
    """FLOPs of one `COUNTED_OPS` node; None when a needed shape is unknown."""
    a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
    out = shapes.get(node.output[0])
    if a is None or b is None or out is None:
        return None
    if node.op_type == "Conv":  # weight [C_out, C_in / groups, k...]: each output element sums C_in/groups x k...
        return 2 * math.prod(out) * math.prod(b[1:])
    if node.op_type == "Gemm":
        trans_a = next((int(at.i) for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return 2 * math.prod(out) * k
    return 2 * math.prod(out) * a[-1]  # MatMul: out [..., M, N], reduce over a's last axis


def count_text(v: int | None) -> str:
    """A parameter or FLOP count for people: 12345678 -> "12.3M", 874648576 -> "875M"; "n/a" for None."""
    if v is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return str(v)
