# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a SageMaker hyperparameter tuning job and, with `follow: true`, print a line each time its counts of training
jobs (completed, in progress, stopped, failed), its best objective so far or its status change, as the SageMaker
SDK's tuner does. With `log_file`, the log of the best training job is saved on the controller when the tuning job
has ended. The loop is the training job's action plugin (sagemaker_training_job.py, next to this file).
"""
from __future__ import annotations

import importlib.util
import os

_SPEC = importlib.util.spec_from_file_location(
    "dlfleet_sagemaker_training_job_action", os.path.join(os.path.dirname(__file__), "sagemaker_training_job.py"))
_training = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_training)


class ActionModule(_training.ActionModule):
    KIND = "tuning"
    MODULE = "sagemaker_tuning_job"
