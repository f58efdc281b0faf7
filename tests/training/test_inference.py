"""Export -> model_fn -> transform_fn round trip, as the MXNet inference container calls them."""
from __future__ import annotations

import io
import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from training import data, inference, models, train


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised network, with trained-looking BatchNorm statistics, exported like a finished run."""
    mx.random.seed(1)
    net = models.get_model("resnet8_v1", base_width=8)
    net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((1, 3, 32, 32)))
    for name, param in net.collect_params().items():
        if name.endswith("running_mean") or name.endswith("running_var"):
            param.set_data(mx.nd.random.uniform(0.5, 1.5, shape=param.shape))
    model_dir = tmp_path_factory.mktemp("model")
    names = [f"class-{i}" for i in range(10)]
    train.export_model(net, model_dir, names, mx.cpu())
    return net, model_dir, names


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _reference(net, images: np.ndarray) -> np.ndarray:
    """What the trained network says about images fed through the training pipeline's normalisation."""
    logits = net(mx.nd.array(data.BatchAugmenter().normalize(images)))
    return mx.nd.softmax(logits).asnumpy()


def test_export_layout(exported) -> None:
    _, model_dir, names = exported
    for name in ("model-symbol.json", "model-0000.params", "model-shapes.json", "synset.txt", "code/inference.py"):
        assert (model_dir / name).is_file(), name
    assert (model_dir / "synset.txt").read_text().split() == names


def test_json_round_trip_matches_the_trained_network(exported) -> None:
    net, model_dir, names = exported
    images = _images(4)
    model = inference.model_fn(str(model_dir))
    body, content_type = inference.transform_fn(model, json.dumps(images.tolist()), "application/json",
                                                "application/json")
    assert content_type == "application/json"
    reply = json.loads(body)
    probs = np.array([p["probabilities"] for p in reply["predictions"]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(probs, _reference(net, images), atol=1e-4)
    assert reply["labels"] == names
    assert [p["label"] for p in reply["predictions"]] == [names[i] for i in probs.argmax(axis=1)]


def test_npy_channels_last_single_image(exported) -> None:
    net, model_dir, _ = exported
    image = _images(1)
    buf = io.BytesIO()
    np.save(buf, image[0].transpose(1, 2, 0))  # one HWC uint8 image, as a client would send a picture
    model = inference.model_fn(str(model_dir))
    body, _ = inference.transform_fn(model, buf.getvalue(), "application/x-npy", "application/json")
    probs = np.array(json.loads(body)["predictions"][0]["probabilities"])
    np.testing.assert_allclose(probs, _reference(net, image)[0], atol=1e-4)


def test_bad_requests_name_the_problem(exported) -> None:
    _, model_dir, _ = exported
    model = inference.model_fn(str(model_dir))
    with pytest.raises(ValueError, match="unsupported content type"):
        inference.transform_fn(model, b"x", "text/csv", "application/json")
    with pytest.raises(ValueError, match=r"got \(3, 8, 8\)"):
        inference.transform_fn(model, json.dumps(np.zeros((3, 8, 8)).tolist()), "application/json", "*/*")


def test_inference_ships_alone_and_train_does_not_serve() -> None:
    """The serving container imports SAGEMAKER_PROGRAM from /opt/ml/model/code only: inference.py goes there alone."""
    assert Path(inference.__file__).read_text().count("from training") == 0  # ships alone as code/inference.py
    assert not hasattr(train, "model_fn") and not hasattr(train, "transform_fn")
