# The SageMaker modules' code and storage: the deterministic source archive (sourcedir.tar.gz, named by its
# content hash), the SDK's deploy-time repack of model.tar.gz, and storage by URI: S3 and file://
# (local mode), with SSE and skip-if-present.
from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import tarfile
from typing import Any

from ansible.module_utils.dlfleet_aws import aws_retry, error_code, is_not_found

try:
    from botocore.exceptions import ClientError
except ImportError:  # the module reports missing botocore through AnsibleAWSModule
    ClientError = Exception  # type: ignore[assignment,misc]

from ansible.module_utils.dlfleet_sagemaker import S3_URI_RE, SageMakerError, resolve_entry_point

# --------------------------------------------------------------------------------------------------
# Code packing: deterministic sourcedir.tar.gz, named by its content hash
# --------------------------------------------------------------------------------------------------


def _excluded(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, pat) for part in parts for pat in patterns) or any(
        fnmatch.fnmatch(rel, pat) for pat in patterns)


def pack_source(root: str, exclude: list[str]) -> bytes:
    """tar.gz of `root` (a directory, or one file) that depends on file names, modes and contents only:
    sorted entries, zero mtimes and owners, no gzip name or time. Equal code gives equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if os.path.isfile(root):
            _add_file(tar, root, os.path.basename(root))
        else:
            for dirpath, dirnames, filenames in os.walk(root):
                rel_dir = os.path.relpath(dirpath, root)
                dirnames[:] = sorted(d for d in dirnames
                                     if not _excluded(os.path.normpath(os.path.join(rel_dir, d)), exclude))
                for name in sorted(filenames):
                    rel = os.path.normpath(os.path.join(rel_dir, name))
                    if not _excluded(rel, exclude):
                        _add_file(tar, os.path.join(dirpath, name), rel)
    return buf.getvalue()


def _add_file(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    info = tarfile.TarInfo(arcname)
    with open(path, "rb") as fh:
        data = fh.read()
    info.size = len(data)
    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def source_bundle(p: dict[str, Any], default_location: str) -> dict[str, Any]:
    """Pack the code and name its place: <code_location>/<sha256[:20]>/sourcedir.tar.gz."""
    root, program = resolve_entry_point(p["entry_point"], p["source_dir"])
    data = pack_source(root, p["source_exclude"])
    digest = hashlib.sha256(data).hexdigest()
    location = (p["code_location"] or default_location).rstrip("/")
    return {"program": program, "data": data, "sha256": digest,
            "uri": f"{location}/{digest[:20]}/sourcedir.tar.gz"}


# The serving images of the MXNet framework (1.4 and later) run multi-model-server, whose handler imports the
# inference code from the model's own code/ folder and never downloads SAGEMAKER_SUBMIT_DIRECTORY: the SDK repacks
# model.tar.gz at deploy time, and so does sagemaker_endpoint.
MODEL_CODE_DIR = "/opt/ml/model/code"


def _safe_member(member: tarfile.TarInfo, uri: str) -> None:
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or not (member.isfile() or member.isdir()):
        raise SageMakerError(f"{uri}: member {name!r} is not a plain file or folder inside the archive; a model "
                             f"archive holds files and folders only, with relative names", code="InvalidModelData")


def _rel(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name.rstrip("/")


def repack_model(storage: Storage, model_uri: str, bundle: dict[str, Any], check_mode: bool) -> str:
    """The SDK's deploy-time repack: `model_uri`'s archive with its code/ folder replaced by the code bundle, stored
    next to the bundle as <location>/<digest>/model.tar.gz. The digest covers the model's identity (S3 ETag and
    size, or the local file's sha256) and the code's, so the same pair is stored once and named the same on every
    run; in check mode only the name is worked out."""
    identity = storage.identity(model_uri)
    digest = hashlib.sha256(f"{identity}\n{bundle['sha256']}".encode()).hexdigest()
    uri = bundle["uri"].rsplit("/", 2)[0] + f"/{digest[:20]}/model.tar.gz"
    if check_mode or storage.exists(uri):
        return uri
    tmp = storage.fetch_temp(model_uri)
    try:
        buf = io.BytesIO()
        with tarfile.open(tmp, "r:*") as src, \
                gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out:
            for member in src:
                _safe_member(member, model_uri)
                if _rel(member.name).split("/", 1)[0] in ("", "code"):
                    continue   # the archive's root entry, and the trainer's copy of the code: the deployed one goes in
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
            with tarfile.open(fileobj=io.BytesIO(bundle["data"]), mode="r:gz") as code:
                for member in code:
                    _safe_member(member, bundle["uri"])
                    if not _rel(member.name):
                        continue
                    data = code.extractfile(member) if member.isfile() else None
                    member.name = "code/" + _rel(member.name)
                    out.addfile(member, data)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SageMakerError(f"{model_uri} is not a readable model.tar.gz ({err}): give the model_artifact of a "
                             f"finished training job", code="InvalidModelData") from err
    finally:
        os.unlink(tmp)
    storage.put_if_absent(uri, buf.getvalue())
    return uri


def default_code_location(output_path: str) -> str:
    return output_path.rstrip("/") + "/code"


# --------------------------------------------------------------------------------------------------
# Storage: S3 and file:// (local mode), with SSE and skip-if-present
# --------------------------------------------------------------------------------------------------

def split_s3(uri: str) -> tuple[str, str]:
    match = S3_URI_RE.match(uri)
    if not match:
        raise SageMakerError(f"{uri!r} is not an S3 URI")
    return match.group("bucket"), match.group("key") or ""


class Storage:
    """Puts and checks objects by URI. S3 writes always ask for server-side encryption."""

    def __init__(self, s3_factory, kms_key_id: str | None = None) -> None:
        self._s3_factory = s3_factory
        self._s3 = None
        self.kms_key_id = kms_key_id

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def sse_args(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def exists(self, uri: str) -> bool:
        if uri.startswith("file://"):
            return os.path.exists(uri[len("file://"):])
        bucket, key = split_s3(uri)
        try:
            aws_retry(self.s3.head_object)(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if is_not_found(err, "s3"):
                return False
            raise SageMakerError(f"cannot read {uri}: {err}", code=error_code(err) or "S3Error") from err

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Store `data` at `uri` unless something is there already (the URI carries the content hash)."""
        if self.exists(uri):
            return False
        if uri.startswith("file://"):
            path = uri[len("file://"):]
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return True
        bucket, key = split_s3(uri)
        try:
            aws_retry(self.s3.put_object)(Bucket=bucket, Key=key, Body=data, **self.sse_args())
        except ClientError as err:
            code = error_code(err)
            hint = " Create the bucket first (playbooks/sagemaker.yml does)." if code == "NoSuchBucket" else ""
            raise SageMakerError(f"cannot upload {uri}: {err}.{hint}", code=code or "S3Error") from err
        return True

    def identity(self, uri: str) -> str:
        """What names this object's content: the local file's sha256, or the S3 object's ETag and size."""
        if uri.startswith("file://"):
            path = uri[len("file://"):]
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError as err:
                raise SageMakerError(f"cannot read {uri}: {err}", code="InvalidModelData") from err
            return f"sha256:{digest.hexdigest()}"
        bucket, key = split_s3(uri)
        try:
            head = aws_retry(self.s3.head_object)(Bucket=bucket, Key=key)
        except ClientError as err:
            if is_not_found(err, "s3"):
                raise SageMakerError(f"{uri} does not exist: give the model_artifact of a finished training job",
                                     code="InvalidModelData") from err
            raise SageMakerError(f"cannot read {uri}: {err}", code=error_code(err) or "S3Error") from err
        return f"etag:{head.get('ETag', '').strip(chr(34))}:{head.get('ContentLength', 0)}"

    def fetch_temp(self, uri: str) -> str:
        """A copy of the object in a temporary file (the caller removes it)."""
        import tempfile
        fd, path = tempfile.mkstemp(prefix="dlfleet-model-", suffix=".tar.gz")
        os.close(fd)
        try:
            self.download(uri, path)
        except BaseException:
            os.unlink(path)
            raise
        return path

    def download(self, uri: str, dest: str) -> None:
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        if uri.startswith("file://"):
            with open(uri[len("file://"):], "rb") as src, open(dest, "wb") as out:
                out.write(src.read())
            return
        bucket, key = split_s3(uri)
        try:
            aws_retry(self.s3.download_file)(bucket, key, dest)
        except ClientError as err:
            raise SageMakerError(f"cannot download {uri}: {err}", code=error_code(err) or "S3Error") from err
