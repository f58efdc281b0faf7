#!/usr/bin/python
# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: sagemaker_endpoint_invoke
short_description: Send requests to a SageMaker endpoint; score it on a CIFAR-10 batch file
version_added: "1.0.0"
description:
  - Sends O(body) once and returns the answer, or sends every image of a CIFAR-10 binary batch file
    (for example the held-out C(test_batch.bin)) in batches as C(application/x-npy) and returns the accuracy
    against the file's labels.
  - Reads only, so it changes nothing and runs in check mode too.
  - With O(instance_type=local) the requests go to the local endpoint served by M(sagemaker_endpoint).
author:
  - dlfleet maintainers (@dlfleet)
options:
  name:
    description: Endpoint name.
    type: str
    required: true
  body:
    description: A request body to send once.
    type: str
  content_type:
    description: Content-Type of O(body).
    type: str
    default: application/json
  accept:
    description: Accept header.
    type: str
    default: application/json
  cifar10_batch:
    description:
      - A CIFAR-10 binary batch file (records of 1 label byte and 3072 pixel bytes). Its images are sent as
        uint8 arrays of shape (N, 3, 32, 32) in C(application/x-npy); the answers' C(predictions[].class) are
        compared with the labels.
    type: path
  limit:
    description: Score only the first this many images of O(cifar10_batch) (0 = all).
    type: int
    default: 0
  batch_size:
    description: Images per request.
    type: int
    default: 100
  sample_size:
    description: How many predictions to return as a sample with O(cifar10_batch).
    type: int
    default: 10
  instance_type:
    description: V(local) for an endpoint served on this machine; leave unset for AWS.
    type: str
  local_dir:
    description: Local mode state, as given to M(sagemaker_endpoint).
    type: path
    default: ~/.dlfleet/sagemaker-local
  local_python:
    description:
      - Local mode's Python, as given to M(sagemaker_endpoint); it runs the local SageMaker runtime that answers
        the call (the package C(sagemaker_local)).
    type: str
    default: python3
attributes:
  check_mode:
    support: full
    details: Sends the requests in check mode too, as invoking an endpoint changes nothing.
  diff_mode:
    support: none
    details: An invocation changes nothing to show.
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Score the endpoint on the held-out test images
  sagemaker_endpoint_invoke:
    name: cifar10
    cifar10_batch: data/cifar10/test_batch.bin
  register: evaluation

- name: Ask for one prediction
  sagemaker_endpoint_invoke:
    name: cifar10-local
    instance_type: local
    local_dir: .run/sagemaker
    local_python: .venv-train/bin/python
    body: "{{ [[[[0] * 32] * 32] * 3] | to_json }}"
"""

RETURN = r"""
response:
  description: The answer to O(body) (parsed when it is JSON).
  returned: with body
  type: raw
accuracy:
  description: Share of images whose predicted class is the label.
  returned: with cifar10_batch
  type: float
  sample: 0.87
correct:
  description: Images predicted right.
  returned: with cifar10_batch
  type: int
count:
  description: Images sent.
  returned: with cifar10_batch
  type: int
per_class_accuracy:
  description: Accuracy per label name.
  returned: with cifar10_batch
  type: dict
requests:
  description: Requests sent.
  returned: with cifar10_batch
  type: int
seconds:
  description: Wall time of all requests.
  returned: with cifar10_batch
  type: float
images_per_second:
  description: Images scored per second, end to end.
  returned: with cifar10_batch
  type: float
sample_predictions:
  description: The first predictions, each with its label.
  returned: with cifar10_batch
  type: list
  elements: dict
"""

import json
import struct
import time

from ansible.module_utils.dlfleet_sagemaker import SageMakerError, check_name, is_local
from ansible.module_utils.dlfleet_sagemaker_backend import backend_for
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

RECORD = 1 + 3 * 32 * 32


def npy_uint8(pixels: bytes, count: int) -> bytes:
    """An .npy (format 1.0) of uint8 (count, 3, 32, 32) around raw pixel bytes, without numpy."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, 3, 32, 32), }" % count  # noqa: UP031
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + pixels


def read_batch(path: str, limit: int) -> tuple[list[int], list[bytes]]:
    with open(path, "rb") as fh:
        data = fh.read()
    if not data or len(data) % RECORD:
        raise SageMakerError(f"cifar10_batch {path!r} is not a CIFAR-10 binary batch: its size {len(data)} is not a "
                             f"multiple of {RECORD} bytes (1 label + 3072 pixels per image)")
    count = len(data) // RECORD
    if limit:
        count = min(count, limit)
    labels = [data[i * RECORD] for i in range(count)]
    images = [data[i * RECORD + 1:(i + 1) * RECORD] for i in range(count)]
    return labels, images


def evaluate(backend, params: dict) -> dict:
    labels, images = read_batch(params["cifar10_batch"], params["limit"])
    correct = 0
    per_class: dict[str, list[int]] = {}
    samples: list[dict] = []
    requests = 0
    start = time.monotonic()
    for first in range(0, len(images), params["batch_size"]):
        chunk = images[first:first + params["batch_size"]]
        body, _type = backend.invoke_endpoint(params["name"], npy_uint8(b"".join(chunk), len(chunk)),
                                              "application/x-npy", "application/json")
        requests += 1
        try:
            answer = json.loads(body)
            predictions = answer["predictions"]
            names = answer.get("labels") or []
        except (ValueError, KeyError, TypeError) as err:
            raise SageMakerError(f"endpoint {params['name']!r} answered {body[:200]!r}, not JSON with 'predictions': "
                                 f"is it serving the CIFAR-10 inference script?", code="ModelError") from err
        if len(predictions) != len(chunk):
            raise SageMakerError(f"endpoint {params['name']!r} returned {len(predictions)} predictions for "
                                 f"{len(chunk)} images", code="ModelError")
        for offset, prediction in enumerate(predictions):
            label = labels[first + offset]
            name = names[label] if label < len(names) else str(label)
            hit = int(prediction["class"]) == label
            correct += hit
            per_class.setdefault(name, []).append(hit)
            if len(samples) < params["sample_size"]:
                samples.append({"label": name, "predicted": prediction.get("label", prediction["class"]),
                                "correct": hit})
    seconds = time.monotonic() - start
    return {
        "accuracy": round(correct / len(images), 6),
        "correct": correct,
        "count": len(images),
        "per_class_accuracy": {k: round(sum(v) / len(v), 6) for k, v in sorted(per_class.items())},
        "requests": requests,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(images) / seconds, 1) if seconds > 0 else None,
        "sample_predictions": samples,
    }


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            body=dict(type="str"),
            content_type=dict(type="str", default="application/json"),
            accept=dict(type="str", default="application/json"),
            cifar10_batch=dict(type="path"),
            limit=dict(type="int", default=0),
            batch_size=dict(type="int", default=100),
            sample_size=dict(type="int", default=10),
            instance_type=dict(type="str"),
            local_dir=dict(type="path", default="~/.dlfleet/sagemaker-local"),
            local_python=dict(type="str", default="python3"),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("body", "cifar10_batch")],
        required_one_of=[("body", "cifar10_batch")],
    )
    params = module.params
    try:
        check_name("endpoint", params["name"])
        if params["batch_size"] < 1 or params["limit"] < 0:
            raise SageMakerError("batch_size must be at least 1 and limit at least 0")
        backend = backend_for(module, is_local(params["instance_type"]))
        if params["body"] is not None:
            body, content_type = backend.invoke_endpoint(params["name"], params["body"].encode(),
                                                         params["content_type"], params["accept"])
            text = body.decode("utf-8", "replace")
            try:
                response = json.loads(text) if "json" in (content_type or "") else text
            except ValueError:
                response = text
            result = {"response": response}
        else:
            result = evaluate(backend, params)
    except SageMakerError as err:
        module.fail_json(**err.fail_json_kwargs())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
