"""The real MXNet serving handler, driven in-process as multi-model-server's Python worker drives it (no Java server).

    .venv-py38/bin/python mms_driver.py MODEL_DIR REQUESTS_JSON ANSWERS_JSON

What the image does before the worker starts (sagemaker_inference.model_server): /opt/ml/model/code joins
PYTHONPATH, and SAGEMAKER_PROGRAM names the user module (the caller sets both). What MMS's Python worker does
(mms/model_loader.py, mms/service.py): it makes the handler class of the configured handler service
(sagemaker_mxnet_serving_container.handler_service), calls initialize(context) once, then handle(data, context) per
request with data = [{"body": <request bytes>}] and the request's headers in context.request_processor[0]. When
initialize fails the worker dies, the model has no worker, and the Java frontend answers every request with 503.

REQUESTS_JSON: [{"name", "content_type" (null: no header), "accept" (null: none), "body_b64"}]; ANSWERS_JSON gets,
per name, {"status", "content_type", "body_b64"}.
"""
import base64
import json
import sys
import traceback

from sagemaker_mxnet_serving_container.handler_service import HandlerService


class RequestProcessor:
    def __init__(self, headers):
        self._headers = headers

    def get_request_properties(self):
        return self._headers

    def get_request_property(self, key):
        return self._headers.get(key)


class Context:
    """The parts of mms.context.Context that the handler uses, for a batch of one request."""

    def __init__(self, model_dir, headers=None):
        self.system_properties = {"model_dir": model_dir, "gpu_id": None, "batch_size": 1, "server_name": "MMS"}
        self.request_processor = [RequestProcessor(headers or {})]
        self.status, self.phrase, self.content_type = 200, "", None

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status, self.phrase = code, phrase

    def set_response_content_type(self, idx, value):
        self.content_type = value

    def get_request_header(self, idx, key):
        return self.request_processor[idx].get_request_property(key)


def main(model_dir, requests_path, answers_path):
    with open(requests_path) as fh:
        requests = json.load(fh)
    service = HandlerService()
    try:
        service.initialize(Context(model_dir))
        loaded = True
    except Exception:  # MMS: the worker fails to load the model and is not started
        traceback.print_exc()
        loaded = False
    answers = {}
    for req in requests:
        if not loaded:
            answers[req["name"]] = {"status": 503, "content_type": "application/json", "body_b64": ""}
            continue
        headers = {}
        if req["content_type"] is not None:
            headers["Content-Type"] = req["content_type"]
        if req["accept"] is not None:
            headers["Accept"] = req["accept"]
        context = Context(model_dir, headers)
        body = service.handle([{"body": base64.b64decode(req["body_b64"])}], context)[0]
        if isinstance(body, str):
            body = body.encode("utf-8")
        answers[req["name"]] = {"status": context.status, "content_type": context.content_type,
                                "body_b64": base64.b64encode(bytes(body)).decode()}
    with open(answers_path, "w") as fh:
        json.dump(answers, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
