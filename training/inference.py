"""Handlers for the SageMaker MXNet inference container: ``model_fn`` and ``transform_fn``.

The exported model (``model-symbol.json``, ``model-0000.params``, ``model-shapes.json``) takes raw pixels: float32
NCHW in 0..255, normalisation is part of the graph. ``synset.txt`` holds the label names, one per line.

Requests: ``application/json`` (a nested list: one image (3, 32, 32) or (32, 32, 3), or a batch of them) or
``application/x-npy`` (a numpy array of the same shapes, uint8 or float). Response (``application/json``):
``{"predictions": [{"label": "cat", "class": 3, "probabilities": [...]}, ...], "labels": [...]}``.
This file imports nothing from the rest of the package, so that it can be shipped alone as ``code/inference.py``.
"""
from __future__ import annotations

import io
import json
import os
import warnings

import mxnet as mx
import numpy as np

MODEL_PREFIX = "model"
LABELS_FILE = "synset.txt"
JSON_TYPES = ("application/json", "text/json")
NPY_TYPE = "application/x-npy"


class LoadedModel:
    """The imported network, its context and the label names."""

    def __init__(self, net: mx.gluon.SymbolBlock, ctx: mx.Context, labels: list[str]):
        self.net, self.ctx, self.labels = net, ctx, labels


def model_fn(model_dir: str) -> LoadedModel:
    """Load the exported symbol and parameters from model_dir (on a GPU when the container has one)."""
    ctx = mx.gpu() if mx.context.num_gpus() > 0 else mx.cpu()
    shapes = _read(os.path.join(model_dir, f"{MODEL_PREFIX}-shapes.json"))
    input_names = [entry["name"] for entry in json.loads(shapes)] if shapes else ["data"]
    with warnings.catch_warnings():  # "cannot decide type for data": the input is float32, set on first call
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock.imports(os.path.join(model_dir, f"{MODEL_PREFIX}-symbol.json"), input_names,
                                           os.path.join(model_dir, f"{MODEL_PREFIX}-0000.params"), ctx=ctx)
    labels = [line.strip() for line in _read(os.path.join(model_dir, LABELS_FILE)).splitlines() if line.strip()]
    return LoadedModel(net, ctx, labels)


def _read(path: str) -> str:
    """The file's text, or "" when it does not exist."""
    if not os.path.isfile(path):
        return ""
    with open(path) as fh:
        return fh.read()


def _decode(data: bytes | str, content_type: str) -> np.ndarray:
    base = (content_type or "").split(";")[0].strip().lower()
    if base in JSON_TYPES:
        array = np.asarray(json.loads(data), dtype=np.float32)
    elif base == NPY_TYPE:
        array = np.load(io.BytesIO(data.encode() if isinstance(data, str) else data), allow_pickle=False)
    else:
        raise ValueError(f"unsupported content type {content_type!r}: send {JSON_TYPES[0]} or {NPY_TYPE}")
    return array.astype(np.float32)


def to_batch(array: np.ndarray) -> np.ndarray:
    """One image or a batch, channels first or last -> float32 (N, 3, 32, 32)."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected an image (3, 32, 32) / (32, 32, 3) or a batch of them, got shape {array.shape}")
    if array.shape[1] != 3 and array.shape[-1] == 3:
        array = array.transpose(0, 3, 1, 2)
    if array.shape[1:] != (3, 32, 32):
        raise ValueError(f"expected images of shape (3, 32, 32) or (32, 32, 3), got {array.shape[1:]}")
    return np.ascontiguousarray(array, dtype=np.float32)


def predict(model: LoadedModel, batch: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) for raw-pixel images (N, 3, 32, 32)."""
    logits = model.net(mx.nd.array(batch, ctx=model.ctx))
    return mx.nd.softmax(logits, axis=-1).asnumpy()


def transform_fn(model: LoadedModel, data: bytes | str, input_content_type: str, accept: str) -> tuple[str, str]:
    """Decode the request, predict, and answer with probabilities and label names as JSON."""
    if accept and accept not in ("*/*", "application/json") and not accept.startswith("application/json"):
        raise ValueError(f"unsupported accept type {accept!r}: this model answers application/json")
    probs = predict(model, to_batch(_decode(data, input_content_type)))
    names = model.labels or [str(i) for i in range(probs.shape[1])]
    predictions = [{"class": int(p.argmax()), "label": names[int(p.argmax())],
                    "probabilities": [round(float(v), 6) for v in p]} for p in probs]
    return json.dumps({"predictions": predictions, "labels": names}), "application/json"
