"""python -m sagemaker_local {api,train,tune,serve}: the local backend's calls and the processes it starts."""
from __future__ import annotations

import argparse
import sys

from sagemaker_local import api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagemaker_local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    call = sub.add_parser("api", help="answer one SageMaker call (JSON request on stdin, JSON answer on stdout)")
    call.add_argument("method", choices=api.METHODS)
    train = sub.add_parser("train", help="run a training job (its supervisor)")
    train.add_argument("job_dir")
    tune = sub.add_parser("tune", help="run a tuning job (its supervisor)")
    tune.add_argument("tuning_dir")
    srv = sub.add_parser("serve", help="serve a model on 127.0.0.1 (the inference container)")
    srv.add_argument("--model-dir", required=True)
    srv.add_argument("--program", required=True)
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)
    if args.command == "api":
        return api.main(args.method)
    # each process imports only what it runs: the api answers many short calls
    if args.command == "train":
        from sagemaker_local.container import TrainingRun
        return TrainingRun(args.job_dir).run()
    if args.command == "tune":
        from sagemaker_local.container import TuningRun
        return TuningRun(args.tuning_dir).run()
    from sagemaker_local.serving import serve
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
