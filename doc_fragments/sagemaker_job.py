# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation shared by the SageMaker job modules (sagemaker_training_job, sagemaker_tuning_job) and, for the
metric definitions, sagemaker_job_curves. Each fragment documents exactly what one spec in module_utils holds:
DOCUMENTATION the training definition (dlfleet_sagemaker.training_spec, less metric_definitions) with local mode
and waiting (common_spec), FOLLOW the follow options (dlfleet_sagemaker_logs.FOLLOW_SPEC), METRIC_DEFINITIONS the
metric definitions (a module adds its own default or required)."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  role_arn:
    description: IAM execution role the job assumes. Required in AWS; recorded only in local mode.
    type: str
  entry_point:
    description:
      - The training script, relative to O(source_dir) when that is set, otherwise a path to one file.
      - Required with O(state=present).
    type: str
  source_dir:
    description: Directory holding the training code; packed whole (less O(source_exclude)).
    type: path
  source_exclude:
    description:
      - Glob patterns of file or directory names left out of the code archive.
      - A C(requirements.txt) in the archive makes the framework container pip-install it; leave it out when
        the image already has what it lists.
    type: list
    elements: str
    default: ["__pycache__", "*.pyc", ".*"]
  code_location:
    description: S3 (or, locally, file://) prefix for code archives. Defaults to O(output_path)/code.
    type: str
  framework:
    description: Framework whose SageMaker image runs the script.
    type: str
    choices: [mxnet]
    default: mxnet
  framework_version:
    description: Framework version, looked up with the SageMaker SDK's C(image_uris.retrieve).
    type: str
    default: "1.9.0"
  py_version:
    description: Python version tag of the framework image.
    type: str
    default: py38
  image_uri:
    description: An explicit training image; overrides the framework lookup.
    type: str
  container_log_level:
    description: Python logging level inside the container (C(sagemaker_container_log_level)).
    type: int
    default: 20
  kms_key_id:
    description: KMS key for SSE-KMS on uploads and on the job's output. Without it, SSE-S3 (AES256).
    type: str
  hyperparameters:
    description: Hyperparameters (numbers, strings, booleans), passed to the script as C(--name value).
    type: dict
    default: {}
  channels:
    description: Input channels, each mounted at C(/opt/ml/input/data/<name>).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Channel name (C(SM_CHANNEL_<NAME>)).
        type: str
        required: true
      uri:
        description: s3:// prefix, or file:// path in local mode.
        type: str
        required: true
      content_type:
        description: MIME type of the channel's data.
        type: str
      distribution:
        description: Whether each instance gets all data or a shard by S3 key.
        type: str
        choices: [FullyReplicated, ShardedByS3Key]
        default: FullyReplicated
      input_mode:
        description: Channel input mode.
        type: str
        choices: [File, Pipe, FastFile]
      compression:
        description: Compression of the channel's data.
        type: str
        choices: ["None", Gzip]
        default: "None"
  instance_type:
    description: An ml.* instance type, or V(local) / V(local_gpu) to run on this machine.
    type: str
  instance_count:
    description: Number of instances.
    type: int
    default: 1
  volume_size:
    description: EBS volume per instance, in GB.
    type: int
    default: 30
  max_run:
    description: Longest the job may run, in seconds; then it is stopped (status Stopped, MaxRuntimeExceeded).
    type: int
    default: 86400
  use_spot:
    description: Managed spot training.
    type: bool
    default: false
  max_wait:
    description: With spot, the longest wait for capacity plus run time, in seconds (>= O(max_run)).
    type: int
  checkpoint_s3_uri:
    description: Where checkpoints are synced, so that an interrupted spot job resumes.
    type: str
  checkpoint_local_path:
    description: Checkpoint directory inside the container.
    type: str
    default: /opt/ml/checkpoints
  distribution:
    description: Distributed training.
    type: dict
    suboptions:
      parameter_server:
        description: MXNet parameter server (scheduler, servers and workers with DMLC_* variables).
        type: dict
        suboptions:
          enabled:
            description: Start the parameter server.
            type: bool
            default: false
  output_path:
    description: S3 prefix (or file:// locally) that receives C(<name>/output/model.tar.gz).
    type: str
  subnets:
    description: VPC subnets (with O(security_group_ids)).
    type: list
    elements: str
  security_group_ids:
    description: VPC security groups (with O(subnets)).
    type: list
    elements: str
  enable_network_isolation:
    description: Run the container without network access.
    type: bool
    default: false
  local_dir:
    description: Local mode state (job records, work dirs, logs), and a cache of image URI lookups.
    type: path
    default: ~/.dlfleet/sagemaker-local
  local_python:
    description: Local mode interpreter that runs the entry point (the training environment's Python).
    type: str
    default: python3
  wait:
    description: Wait until the job is Completed, Failed or Stopped.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait.
    type: int
    default: 86400
"""

    FOLLOW = r"""
options:
  follow:
    description:
      - Print the job's progress on stderr while it runs, each line with the time it was shown, none twice. For a
        training job, as the SageMaker SDK's C(logs=True) does, each secondary-status transition, each status
        change and each new line of the job's log (CloudWatch Logs in AWS, the container log in local mode). For
        a tuning job, each change of its counts of training jobs (completed, in progress, stopped, failed), of
        its best objective so far or of its status.
      - Done by this module's action plugin (C(playbooks/action_plugins)); the module alone refuses it.
    type: bool
    default: false
  follow_interval:
    description:
      - With O(follow) or O(log_file), the longest wait in seconds for news in one round.
      - Defaults to 10 in local mode and 30 in AWS.
    type: int
  log_file:
    description:
      - A file on the controller that receives the job's whole log when it has ended (for a tuning job, the log of
        its best training job), rewritten only when it differs. Done by the action plugin, as O(follow).
    type: path
"""

    METRIC_DEFINITIONS = r"""
options:
  metric_definitions:
    description: Metrics read from the job's log; the regex's first group is the value.
    type: list
    elements: dict
    suboptions:
      name:
        description: Metric name.
        type: str
        required: true
      regex:
        description: Regular expression with one group.
        type: str
        required: true
"""
