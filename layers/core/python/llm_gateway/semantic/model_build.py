"""Build the serving copy of the embedding model: fused transformer ops, then dynamic int8.

Build-time only (needs the `onnx` package); `embeddings.prepare_model` calls `build` once per
machine and the gateway then loads the result with onnxruntime alone.

1. Fold: onnxruntime at its basic level (constant folding only) turns the packaged model's int8
   weight storage back into float initialisers.
2. Rebuild: the exported graph spends ~260 small nodes per query (reshapes, transposes, masking
   arithmetic around each attention). The same BERT computation is written again with
   onnxruntime's fused CPU operators (`Attention`, `SkipLayerNormalization`, `BiasGelu`): 53
   nodes, identical outputs in float32 (the tests compare them).
3. Quantise dynamically: int8 weights per output channel, int8 activations with a scale computed
   per run; matrix products then use integer kernels.

Weights are found by the names of their biases (`...attention.self.query.bias` and so on) and
the MatMul that feeds each bias's Add, so the rebuild does not depend on exporter node names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN = 384
HEADS = 12
LAYERS = 6
LAYER_NORM_EPSILON = 1e-12
PREFIX = "inner."  # the packaged model's parameter prefix
MS_DOMAIN = "com.microsoft"


class _Graph:
    """Collects nodes and float initialisers for the rebuilt model."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def weight(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, *, domain: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attrs))
        return output


class _Source:
    """The folded float model: initialisers by name, and how to find a Linear layer's weight."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self._producer = {out: n for n in graph.node for out in n.output}
        self._consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for name in n.input:
                self._consumers.setdefault(name, []).append(n)

    def linear(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """(weight as x @ W, bias) of the Linear layer whose bias is `prefix.bias`."""
        bias = prefix + ".bias"
        add = next(n for n in self._consumers.get(bias, []) if n.op_type == "Add")
        matmul = self._producer[add.input[0] if add.input[1] == bias else add.input[1]]
        if matmul.op_type != "MatMul":
            raise ValueError(f"{prefix}: expected MatMul before the bias Add, found {matmul.op_type}")
        return self.tensors[matmul.input[1]], self.tensors[bias]


def rebuild(folded: Path, output: Path) -> None:
    """Write the fused float32 graph of the folded model to `output`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    source = _Source(onnx.load(str(folded)))
    t = source.tensors
    g = _Graph()
    emb = PREFIX + "embeddings."
    # Positions 0..S-1 per row, from the shape of input_ids.
    g.node("Shape", ["input_ids"], "shape")
    g.node("ConstantOfShape", ["shape"], "ones", value=numpy_helper.from_array(np.array([1], np.int64)))
    g.node("CumSum", ["ones", g.weight("axis_1", np.array(1, np.int64))], "counts")
    g.node("Sub", ["counts", g.weight("one", np.array(1, np.int64))], "positions")
    g.node("Gather", [g.weight("word_embeddings", t[emb + "word_embeddings.weight"]), "input_ids"], "e_word")
    g.node("Gather", [g.weight("type_embeddings", t[emb + "token_type_embeddings.weight"]), "token_type_ids"], "e_type")
    g.node("Gather", [g.weight("position_embeddings", t[emb + "position_embeddings.weight"]), "positions"], "e_pos")
    g.node("Add", ["e_word", "e_type"], "e_word_type")
    g.node("Add", ["e_word_type", "e_pos"], "e_sum")
    x = g.node(
        "LayerNormalization",
        ["e_sum", g.weight("emb_gamma", t[emb + "LayerNorm.weight"]), g.weight("emb_beta", t[emb + "LayerNorm.bias"])],
        "h0",
        axis=-1,
        epsilon=LAYER_NORM_EPSILON,
    )
    g.node("Cast", ["attention_mask"], "mask_int32", to=TensorProto.INT32)
    for layer in range(LAYERS):
        x = _encoder_layer(g, source, layer, x, last=layer == LAYERS - 1)
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])]
    graph = helper.make_graph(g.nodes, "all-minilm-l6-v2-fused", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)])
    onnx.checker.check_model(model)
    onnx.save(model, str(output))


def _encoder_layer(g: _Graph, source: _Source, layer: int, x: str, *, last: bool) -> str:
    """One post-LayerNorm BERT layer: fused self-attention, output projection, GELU feed-forward."""
    p = f"{PREFIX}encoder.layer.{layer}."
    t = source.tensors
    (wq, bq), (wk, bk), (wv, bv) = (source.linear(p + f"attention.self.{name}") for name in ("query", "key", "value"))
    wo, bo = source.linear(p + "attention.output.dense")
    w1, b1 = source.linear(p + "intermediate.dense")
    w2, b2 = source.linear(p + "output.dense")
    n = f"l{layer}_"
    attention = g.node(
        "Attention",
        [
            x,
            g.weight(n + "wqkv", np.concatenate([wq, wk, wv], axis=1)),
            g.weight(n + "bqkv", np.concatenate([bq, bk, bv])),
            "mask_int32",
        ],
        n + "attention",
        domain=MS_DOMAIN,
        num_heads=HEADS,
    )
    projected = g.node("MatMul", [attention, g.weight(n + "wo", wo)], n + "projected")
    h1 = g.node(
        "SkipLayerNormalization",
        [
            projected,
            x,
            g.weight(n + "gamma1", t[p + "attention.output.LayerNorm.weight"]),
            g.weight(n + "beta1", t[p + "attention.output.LayerNorm.bias"]),
            g.weight(n + "bo", bo),
        ],
        n + "h1",
        domain=MS_DOMAIN,
        epsilon=LAYER_NORM_EPSILON,
    )
    up = g.node("MatMul", [h1, g.weight(n + "w1", w1)], n + "up")
    gelu = g.node("BiasGelu", [up, g.weight(n + "b1", b1)], n + "gelu", domain=MS_DOMAIN)
    down = g.node("MatMul", [gelu, g.weight(n + "w2", w2)], n + "down")
    return g.node(
        "SkipLayerNormalization",
        [
            down,
            h1,
            g.weight(n + "gamma2", t[p + "output.LayerNorm.weight"]),
            g.weight(n + "beta2", t[p + "output.LayerNorm.bias"]),
            g.weight(n + "b2", b2),
        ],
        "last_hidden_state" if last else n + "out",
        domain=MS_DOMAIN,
        epsilon=LAYER_NORM_EPSILON,
    )


def fold(source: Path, output: Path) -> None:
    """Constant-fold `source` into a float32 graph at `output` (nothing machine-specific added)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(output)
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])


def quantize(fused: Path, output: Path) -> None:
    """Dynamic int8 quantisation: signed per-channel weights, activations scaled per run."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs advice about calibration pre-processing on the root logger; it does not
    # apply to dynamic quantisation.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            fused,
            output,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Shape inference cannot type the outputs of the fused (com.microsoft) operators.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)


def build(source: Path, output: Path, work: Path) -> None:
    """Fold, rebuild fused, quantise: `source` (the packaged model) to `output`, using `work` for
    the intermediate files."""
    folded, fused = work / "folded.onnx", work / "fused.onnx"
    fold(source, folded)
    rebuild(folded, fused)
    quantize(fused, output)
