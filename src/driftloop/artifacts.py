"""Model artifact integrity: the SHA-256 manifest written at log time and the ONE load every driftloop path uses.

At log time (``tracking.log_model``) every file of the logged MLflow model directory is hashed (SHA-256) as it is
stored in the artifact store; the manifest (relative path -> sha256) and its digest are recorded as tags in the
tracking store (on the logged model, and on the model version via ``tracking.integrity_tags``), not next to
the files they protect.

``load_model(name, version_or_alias, client)`` downloads the version's files into a private temporary directory,
checks every file against the recorded manifest BEFORE reading any of them (a changed, missing or extra file
raises ``IntegrityError`` naming it), then rebuilds the ``DriftloopModel`` from ``model.json`` (JSON) and
``booster.txt`` (LightGBM text): no pickle is read and no code from the artifact store runs. With
``as_pyfunc=True`` it returns MLflow's pyfunc model loaded from the same verified directory (that runs the
verified models-from-code file, which only imports the installed ``driftloop.pyfunc``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from driftloop.errors import IntegrityError, RegistryError

_log = logging.getLogger(__name__)

DIGEST_TAG = "driftloop.sha256"  # SHA-256 of the canonical manifest JSON
MANIFEST_TAG = "driftloop.manifest"  # the manifest: {"relative/path": "sha256", ...} as JSON
FORMAT_TAG = "driftloop.model_format"
# where the pyfunc artifacts land inside the logged model (MLflow copies ``artifacts=`` under ``artifacts/``)
MODEL_JSON_PATH = "artifacts/model.json"
BOOSTER_PATH = "artifacts/booster.txt"


# --------------------------------------------------------------------------- hashing
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# MLflow itself writes this file into a registered model's directory whenever it is downloaded through a
# ``models:/name/version`` URI, in the artifact store itself for a local store (``mlflow.pyfunc.load_model`` with no
# ``dst_path``); no MLflow code reads it. It is left out of the manifest and checked for its plain two-key
# form instead (anything else in it is refused), then removed from the copy that is loaded.
REGISTERED_MODEL_META = "registered_model_meta"


def build_manifest(directory: str | Path) -> dict[str, str]:
    """relative POSIX path -> SHA-256 of every file under ``directory`` (sorted; symlinks count as files),
    except MLflow's root ``registered_model_meta`` bookkeeping file."""
    root = Path(directory)
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            rel = path.relative_to(root).as_posix()
            if rel != REGISTERED_MODEL_META:
                out[rel] = sha256_file(path)
    return out


def _check_registered_model_meta(root: Path, what: str) -> None:
    import yaml

    path = root / REGISTERED_MODEL_META
    if not (path.exists() or path.is_symlink()):
        return
    ok = False
    if path.is_file() and not path.is_symlink() and path.stat().st_size <= 1024:
        try:
            meta = yaml.safe_load(path.read_text(encoding="utf-8"))
            ok = (
                isinstance(meta, dict)
                and set(meta) <= {"model_name", "model_version"}
                and all(isinstance(v, str | int) for v in meta.values())
            )
        except (yaml.YAMLError, UnicodeDecodeError):
            ok = False
    if not ok:
        raise IntegrityError(
            f"{what}: artifact '{REGISTERED_MODEL_META}' is not MLflow's plain model name/version record; "
            "refusing to load it"
        )
    path.unlink()


def manifest_digest(manifest: dict[str, str]) -> str:
    """The SHA-256 of the manifest's canonical JSON: one value that names every byte of the model."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def integrity_tags(manifest: dict[str, str]) -> dict[str, str]:
    """The tags a model version carries: ``driftloop.sha256`` (the digest) and ``driftloop.manifest``."""
    from driftloop.model import MODEL_FORMAT

    return {
        DIGEST_TAG: manifest_digest(manifest),
        MANIFEST_TAG: json.dumps(manifest, sort_keys=True, separators=(",", ":")),
        FORMAT_TAG: MODEL_FORMAT,
    }


def verify_directory(directory: str | Path, manifest: dict[str, str], what: str = "model") -> None:
    """Raise ``IntegrityError`` naming the first file (sorted) that differs from ``manifest``, or is missing/extra."""
    _check_registered_model_meta(Path(directory), what)
    actual = build_manifest(directory)
    problems = []
    for rel in sorted(set(manifest) | set(actual)):
        if rel not in actual:
            problems.append(f"'{rel}' is missing")
        elif rel not in manifest:
            problems.append(f"'{rel}' is an extra file not in the recorded manifest")
        elif actual[rel] != manifest[rel]:
            problems.append(f"'{rel}' has SHA-256 {actual[rel][:16]}..., recorded {manifest[rel][:16]}...")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(
            f"{what}: artifact {problems[0]}{more}; refusing to load it. All differences: {'; '.join(problems[:10])}"
        )


# --------------------------------------------------------------------------- the declarative model files
def write_model_files(model, directory: str | Path) -> dict[str, str]:
    """Write ``model.json`` and ``booster.txt`` into ``directory``; returns {pyfunc artifact key: path}."""
    from driftloop.pyfunc import BOOSTER, FILES, MODEL_JSON

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {key: str(directory / name) for key, name in FILES.items()}
    Path(paths[MODEL_JSON]).write_text(json.dumps(model.to_dict(), indent=1, allow_nan=False), encoding="utf-8")
    Path(paths[BOOSTER]).write_text(model.booster_text(), encoding="utf-8")
    return paths


def read_model_files(model_json: str | Path, booster_txt: str | Path):
    """The ``DriftloopModel`` from its JSON and LightGBM text files (parsing only: no code from them runs)."""
    from driftloop.model import DriftloopModel

    data = json.loads(Path(model_json).read_text(encoding="utf-8"))
    return DriftloopModel.from_parts(data, Path(booster_txt).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the one load
def _client(client):
    if client is not None:
        return client
    from mlflow.tracking import MlflowClient

    return MlflowClient()  # the URIs driftloop set with tracking.connect


def resolve_version(client, name: str, version_or_alias: str | int):
    """The ModelVersion for ``"3"``/``3`` or an alias such as ``"champion"``; RegistryError if unknown."""
    from mlflow.exceptions import MlflowException

    ref = str(version_or_alias)
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        kind = "version" if ref.isdigit() else "alias"
        raise RegistryError(f"model '{name}' has no {kind} '{ref}' ({exc.error_code})") from None


def logged_model_id(mv) -> str | None:
    """The id of the logged model a version was registered from (the SQLite store leaves ``mv.model_id``
    empty; the version's source ``models:/m-...`` names it)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = str(getattr(mv, "source", "") or "")
    if source.startswith("models:/m-") and "/" not in source[len("models:/") :]:
        return source[len("models:/") :]
    return None


def recorded_manifest(client, mv) -> tuple[dict[str, str] | None, str | None]:
    """(manifest, digest) recorded for a version: its own tags, else the tags of the logged model it was
    registered from (``tracking.log_model`` always writes those). (None, None) when none was recorded."""
    sources = [("model version", dict(mv.tags or {}))]
    model_id = logged_model_id(mv)
    if model_id:
        try:
            sources.append(("logged model", dict(client.get_logged_model(model_id).tags or {})))
        except Exception as exc:  # a store without logged models (MLflow 2 server): the version's tags only
            _log.debug("no logged model %s: %s", model_id, exc)
    found = [(where, tags) for where, tags in sources if DIGEST_TAG in tags or MANIFEST_TAG in tags]
    if not found:
        return None, None
    where, tags = found[0]
    label = f"model '{mv.name}' version {mv.version}"
    try:
        manifest = json.loads(tags[MANIFEST_TAG])
        digest = tags[DIGEST_TAG]
    except (KeyError, ValueError) as exc:
        raise IntegrityError(f"{label}: the {where}'s integrity tags are incomplete or unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest_digest(manifest) != digest:
        raise IntegrityError(f"{label}: tag '{MANIFEST_TAG}' does not match tag '{DIGEST_TAG}' on the {where}")
    for other, tags2 in found[1:]:
        if tags2.get(DIGEST_TAG) != digest:
            raise IntegrityError(f"{label}: tag '{DIGEST_TAG}' differs between the {where} and the {other}")
    return manifest, digest


def download_model_files(client, mv, dst: str | Path) -> Path:
    """The version's stored files, exactly as stored (no ``registered_model_meta`` added), into ``dst``."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = client.get_model_version_download_uri(mv.name, mv.version)
    tracking_uri = getattr(client, "_tracking_client", None)
    tracking_uri = getattr(tracking_uri, "tracking_uri", None)
    kwargs = {"tracking_uri": tracking_uri} if tracking_uri else {}
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), **kwargs))


def load_model(
    name: str,
    version_or_alias: str | int,
    client=None,
    *,
    allow_unverified: bool = False,
    as_pyfunc: bool = False,
) -> Any:
    """THE way driftloop loads a registered model (score, monitor, the gate, serving): verified, then parsed.

    1. resolve the version (number or alias) and read its recorded manifest from the tracking store;
    2. download its files into a private temporary directory (mode 0700), and check every file's SHA-256
       against the manifest BEFORE opening any of them: a changed, missing or extra file raises
       ``IntegrityError`` naming it;
    3. rebuild the ``DriftloopModel`` from ``artifacts/model.json`` and ``artifacts/booster.txt`` (no pickle, no
       code from the artifact); with ``as_pyfunc=True`` return ``mlflow.pyfunc.load_model`` of the verified
       directory instead (it executes the verified models-from-code file, which imports the installed driftloop).

    A version with no recorded manifest (logged by a driftloop from before integrity records, whose model is a
    cloudpickle) is refused with ``IntegrityError``: nothing vouches for its bytes and loading it would unpickle
    them. ``allow_unverified=True`` is the explicit, logged opt-in for such a version you trust (it is loaded the
    old way, unpickling its ``python_model.pkl``); re-registering the model with this driftloop is the fix.
    """
    client = _client(client)
    mv = resolve_version(client, name, version_or_alias)
    label = f"model '{name}' version {mv.version}"
    manifest, digest = recorded_manifest(client, mv)
    if manifest is None and not allow_unverified:
        raise IntegrityError(
            f"{label} has no recorded SHA-256 manifest (tag '{DIGEST_TAG}'): it was logged by an older driftloop "
            "and its files cannot be verified, so it is not loaded. Retrain and register it again (`driftloop run`), "
            "or, for a version you trust, load it with allow_unverified=True."
        )
    tmp = tempfile.mkdtemp(prefix="driftloop-model-")  # 0700: nobody else can swap a file between check and use
    try:
        local = download_model_files(client, mv, tmp)
        if manifest is not None:
            verify_directory(local, manifest, label)
        elif allow_unverified:
            _log.warning("%s: loaded WITHOUT integrity verification (allow_unverified=True)", label)
        if as_pyfunc or (manifest is None and not (local / MODEL_JSON_PATH).exists()):
            import mlflow.pyfunc

            pyfunc = mlflow.pyfunc.load_model(str(local), suppress_warnings=True)
            return pyfunc if as_pyfunc else pyfunc.unwrap_python_model().model  # the latter: legacy pickle
        model = read_model_files(local / MODEL_JSON_PATH, local / BOOSTER_PATH)
        model.sha256 = digest  # the verified digest travels with the loaded model (None when unverified)
        return model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
