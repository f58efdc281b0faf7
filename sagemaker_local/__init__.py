"""SageMaker local mode without docker: what `instance_type: local` runs, in the training environment.

The dlfleet SageMaker modules talk to SageMaker through one backend interface. In AWS that is boto3; in local mode
it is this package, run as `python -m sagemaker_local api <method>` with the training environment's Python (the
modules' `local_python`). It answers the same calls with the same record shapes (backend.LocalSageMaker), runs
training and tuning jobs under the SageMaker training-container contract and serves models on loopback HTTP
servers under the inference-container contract (container), and reads a job's container log (logs).

Standard library only, for Pythons 3.8 to 3.11, except boto3 for s3:// URIs (requirements.txt).
"""
