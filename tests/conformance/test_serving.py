"""Serving: the model.tar.gz of the real training job, through the serving image's MXNet handler service
(sagemaker-inference 1.10.1 + sagemaker-mxnet-inference 1.5.5, driven as multi-model-server's Python worker drives
it: mms_driver.py) and through our local endpoint (the sagemaker_local runtime, through its client
module_utils/dlfleet_sagemaker_local.py); one table of requests, the same status codes and bodies. Error bodies are
the message and then a traceback, whose file paths differ between the two installations: their first line (the
message) is compared."""
from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from conformance import sm

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (3, 32, 32))


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def table() -> list[dict[str, Any]]:
    """Each content type and accept the handlers support, and the inputs they must refuse."""
    one = json.dumps(IMAGE.tolist()).encode()
    rows = [
        ("json, one image", one, "application/json", "application/json"),
        ("json, channels last batch, any accept", json.dumps(
            RNG.integers(0, 256, (2, 32, 32, 3)).tolist()).encode(), "application/json", "*/*"),
        ("json, no accept", one, "application/json", None),
        ("json with charset", one, "application/json; charset=utf-8", "application/json"),
        ("text/json", one, "text/json", "application/json"),
        ("npy uint8 batch", npy(RNG.integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)), "application/x-npy",
         "application/json"),
        ("npy float32 image", npy(IMAGE.astype(np.float32)), "application/x-npy", "application/json"),
        ("wrong image size", json.dumps(np.zeros((3, 8, 8)).tolist()).encode(), "application/json",
         "application/json"),
        ("wrong rank", json.dumps([1, 2, 3]).encode(), "application/json", "application/json"),
        ("bad json", b"{not json", "application/json", "application/json"),
        ("empty body", b"", "application/json", "application/json"),
        ("no content type", one, None, "application/json"),
        ("csv", b"1,2,3", "text/csv", "application/json"),
        ("unsupported accept", one, "application/json", "text/csv"),
        ("python pickle", pickle.dumps(IMAGE), "application/python-pickle", "application/json"),
        ("npy holding a pickle", npy(np.array([IMAGE, "x"], dtype=object), allow_pickle=True),
         "application/x-npy", "application/json"),
    ]
    return [{"name": name, "body_b64": base64.b64encode(body).decode(), "content_type": content_type,
             "accept": accept} for name, body, content_type, accept in rows]


def served(model_archive: Path, code: Path, work: Path, name: str) -> Path:
    """The folder the real serving image would have as /opt/ml/model: the archive that sagemaker_endpoint's repack
    makes from the training job's model.tar.gz and the inference code, unpacked."""
    dest = work / name
    with tarfile.open(sm.repack(model_archive, code, work / f"{name}-code")) as tar:
        tar.extractall(dest)
    return dest


def local_answers(url: str, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    answers = {}
    for req in requests:
        status, content_type, body = sm.post(url, base64.b64decode(req["body_b64"]), req["content_type"],
                                             req["accept"])
        answers[req["name"]] = {"status": status, "content_type": content_type,
                                "body_b64": base64.b64encode(body).decode()}
    return answers


def both_answers(model_archive: Path, code: Path, work: Path, name: str,
                 requests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answers of the real handler service and of our local endpoint, each serving the archive our repack makes
    from `model_archive` and `code`."""
    real = sm.real_handler(served(model_archive, code, work, f"{name}-served"), requests, work)
    backend, url = sm.deploy_local(work / "local-serving", name, model_archive, code)
    try:
        return real, local_answers(url, requests)
    finally:
        backend.delete_endpoint(name)


def comparable(answer: dict[str, Any]) -> tuple[int, Any]:
    body = base64.b64decode(answer["body_b64"])
    if answer["status"] == 200:
        return 200, (answer["content_type"], json.loads(body))
    if answer["status"] == 503:  # the Java frontend's answer: its body is not the handler's
        return 503, None
    return answer["status"], body.decode("utf-8", "replace").split("\n", 1)[0]


def test_the_request_table_gets_the_same_answers(model_archive: Path, code: Path, work: Path) -> None:
    requests = table()
    real, ours = both_answers(model_archive, code, work, "conformance-serving", requests)
    statuses = {name: answer["status"] for name, answer in real.items()}
    assert statuses["json, one image"] == 200 and statuses["no content type"] == 500, statuses
    assert statuses["npy holding a pickle"] == 500 and statuses["python pickle"] == 500
    for req in requests:
        assert comparable(ours[req["name"]]) == comparable(real[req["name"]]), req["name"]


def test_a_model_that_does_not_load_answers_503_per_request(work: Path) -> None:
    model = work / "broken-model"
    (model / "code").mkdir(parents=True)
    shutil.copy(sm.ROOT / "tests" / "fixtures" / "sagemaker" / "broken_inference.py", model / "code" / "inference.py")
    archive = work / "broken-model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model / "code", arcname="code")
    code = work / "broken-code.tar.gz"
    with tarfile.open(code, "w:gz") as tar:
        tar.add(model / "code" / "inference.py", arcname="inference.py")
    requests = table()[:2]
    real, ours = both_answers(archive, code, work, "conformance-broken", requests)
    assert {a["status"] for a in real.values()} == {a["status"] for a in ours.values()} == {503}
    assert "the archive is empty" in base64.b64decode(ours[requests[0]["name"]]["body_b64"]).decode()
