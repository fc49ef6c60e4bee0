#!/usr/bin/env python3
"""DistroFace: a self-hosted container registry in one module.

Run ``python distroface.py`` (or ``python distroface.pyz``) to serve the OCI
Distribution API, the Docker token service and the web UI on port 8668 with
data in ``./data``.  Sections follow the data: grammar, configuration, storage,
registry model, identity, HTTP, background services, command line.
"""
from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import copy
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import sys
import time
import tomllib
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import trio

__version__ = "0.1.0"
log = logging.getLogger("distroface")
access_log = logging.getLogger("distroface.access")


# ============================================================================
# Constants, media types, grammar, errors
# ============================================================================

API_VERSION_HEADER = ("docker-distribution-api-version", "registry/2.0")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
GENERIC_CONTENT_TYPES = ("application/json", "application/octet-stream", "text/plain")
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES + INDEX_TYPES
NONDISTRIBUTABLE_LAYER_TYPES = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
MAX_NAME_LENGTH = 255
SMALL_BLOB = 4 << 20
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}
HEX_RE = re.compile(r"[a-f0-9]+")


class RegistryError(Exception):
    """A failure reported to the client as an OCI error body."""

    def __init__(self, code: str, message: str, status: int = 400, detail: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.detail, self.headers = detail, headers or {}

    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message, "detail": self.detail}
        return json.dumps({"errors": [error]}).encode()


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(name):
        raise RegistryError("NAME_INVALID", "invalid repository name", detail={"name": name[:300]})
    return name


def validate_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise RegistryError("MANIFEST_INVALID", "invalid tag: tags are [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
                            detail={"tag": tag[:300]})
    return tag


def parse_digest(digest: str) -> tuple[str, str]:
    """Split 'alg:hex' into its parts, refusing anything but sha256/sha512 hex."""
    algorithm, _, encoded = digest.partition(":")
    if algorithm not in DIGEST_ALGORITHMS:
        raise RegistryError("DIGEST_INVALID", "unsupported or malformed digest",
                            detail={"digest": digest[:300], "supported": list(DIGEST_ALGORITHMS)})
    if len(encoded) != DIGEST_ALGORITHMS[algorithm] or not HEX_RE.fullmatch(encoded):
        raise RegistryError("DIGEST_INVALID", "malformed digest", detail={"digest": digest[:300]})
    return algorithm, encoded


def is_digest(reference: str) -> bool:
    return ":" in reference


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ============================================================================
# Configuration
# ============================================================================

DEFAULT_CONFIG: dict[str, Any] = {
    "server": {
        "listen": "0.0.0.0:8668",
        "data_dir": "./data",
        "tls_cert": "",
        "tls_key": "",
        "access_log": True,
        "public_url": "",
        "shutdown_grace": 10.0,
    },
    "registry": {
        "delete_enabled": True,
        "max_manifest_size": 4 * 1024 * 1024,
        "max_blob_size": 0,
        "upload_max_age": 86400,
        "upload_purge_interval": 600,
        "referrers_enabled": True,
    },
    "auth": {
        "enabled": True,
        "service": "distroface",
        "issuer": "distroface",
        "realm": "",
        "token_lifetime": 300,
        "refresh_token_lifetime": 7 * 86400,
        "bcrypt_rounds": 12,
        "min_password_length": 8,
        "initial_admin_password": "",
        "basic_cache_seconds": 60,
        "login_max_failures": 5,
        "login_window": 60,
    },
    "roles": {},
    "groups": {},
}

ENV_SHORTCUTS = {
    "DISTROFACE_LISTEN": ("server", "listen"),
    "DISTROFACE_DATA": ("server", "data_dir"),
    "DISTROFACE_ADMIN_PASSWORD": ("auth", "initial_admin_password"),
    "DISTROFACE_BCRYPT_ROUNDS": ("auth", "bcrypt_rounds"),
}


class ConfigError(ValueError):
    pass


def merge_config(defaults: dict, overrides: dict, where: str = "") -> dict:
    """Deep-merge overrides into a copy of defaults, checking names and types."""
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            if where in ("roles", "groups"):
                merged[key] = value
                continue
            raise ConfigError(f"unknown setting {where + '.' if where else ''}{key}")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            merged[key] = merge_config(default, value, key)
        elif isinstance(default, bool) != isinstance(value, bool) or (
                not isinstance(value, type(default)) and not (
                    isinstance(default, float) and isinstance(value, int))):
            raise ConfigError(f"{where}.{key} must be {type(default).__name__}, got {value!r}")
        else:
            merged[key] = value
    return merged


def coerce_env_value(default: Any, text: str) -> Any:
    if isinstance(default, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def env_overrides(environ: dict[str, str]) -> dict:
    """DISTROFACE_<SECTION>_<KEY> and a few shortcuts override the file."""
    overrides: dict[str, dict] = {}
    pairs = dict(ENV_SHORTCUTS)
    for section, values in DEFAULT_CONFIG.items():
        for key in values:
            pairs[f"DISTROFACE_{section}_{key}".upper()] = (section, key)
    for name, (section, key) in pairs.items():
        if name in environ:
            default = DEFAULT_CONFIG[section][key]
            overrides.setdefault(section, {})[key] = coerce_env_value(default, environ[name])
    return overrides


def validate_config(config: dict) -> dict:
    listen = config["server"]["listen"]
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[\w.-]*):\d{1,5}", listen):
        raise ConfigError(f"server.listen must be HOST:PORT, got {listen!r}")
    if bool(config["server"]["tls_cert"]) != bool(config["server"]["tls_key"]):
        raise ConfigError("server.tls_cert and server.tls_key must be set together")
    for key in ("max_manifest_size", "max_blob_size", "upload_max_age", "upload_purge_interval"):
        if config["registry"][key] < 0:
            raise ConfigError(f"registry.{key} must not be negative")
    if not 4 <= config["auth"]["bcrypt_rounds"] <= 31:
        raise ConfigError("auth.bcrypt_rounds must be between 4 and 31")
    validate_rbac_tables(config["roles"], config["groups"])
    return config


def load_config(path: Path | None, environ: dict[str, str] | None = None,
                cli: dict | None = None) -> dict:
    """Defaults, then the TOML file, then the environment, then the command line."""
    environ = os.environ if environ is None else environ
    file_values: dict = {}
    if path is not None and path.exists():
        try:
            file_values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    config = merge_config(DEFAULT_CONFIG, file_values)
    config = merge_config(config, env_overrides(environ))
    config = merge_config(config, cli or {})
    config["roles"] = merge_rbac_defaults(config["roles"], DEFAULT_ROLES)
    config["groups"] = merge_rbac_defaults(config["groups"], DEFAULT_GROUPS)
    return validate_config(config)


def file_stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        st = path.stat() if path else None
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


class LiveConfig:
    """The configuration in force.  `values` is changed in place on reload, so
    every part holding it sees the new rules; a bad file leaves it untouched."""

    def __init__(self, path: Path | None, cli: dict | None = None):
        self.cli = cli or {}
        self.values = load_config(path, cli=self.cli)
        self.path = path or Path(self.values["server"]["data_dir"]) / "config.toml"
        if path is None and self.path.exists():
            self.values = load_config(self.path, cli=self.cli)
        self.stamp = file_stamp(self.path)

    def reload(self) -> None:
        self.stamp = file_stamp(self.path)
        fresh = load_config(self.path, cli=self.cli)
        self.values.clear()
        self.values.update(fresh)

    def reload_if_changed(self) -> bool:
        if file_stamp(self.path) == self.stamp:
            return False
        try:
            self.reload()
        except ConfigError as exc:
            log.error("configuration %s refused, the previous settings stay in force: %s", self.path, exc)
            return False
        log.info("configuration %s reloaded", self.path)
        return True


# ============================================================================
# Storage
# ============================================================================

class FileStore:
    """Keys are relative '/'-separated paths under a root directory.

    Every write is atomic (temporary file, os.replace), so a crash leaves
    each key either old or new.  Content is fsynced before it is renamed into
    place; small facts are not, and each change ends with one commit(): an
    fsync of a directory, which on a journaling file system makes every rename
    before it durable too.  All disk work runs in worker threads.
    """

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    # -- synchronous primitives, run in threads --------------------------------

    def _write_atomic(self, key: str, data: bytes, durable: bool = False) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        with open(temp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, target)

    def _fsync_file(self, key: str) -> None:
        with open(self.path(key), "rb") as f:
            os.fsync(f.fileno())

    def _commit(self, key: str) -> None:
        """Make the changes so far durable (see the class docstring)."""
        self._fsync_dir(self.path(key).parent)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _read_span(self, key: str, start: int, end: int) -> bytes:
        with open(self.path(key), "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def _read_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        found = {}
        for key in keys:
            data = self._read(key)
            if data is not None:
                found[key] = data
        return found

    def _size(self, key: str) -> int | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if not os.path.isdir(self.path(key)) else None

    def _list(self, prefix: str) -> list[str]:
        try:
            return [entry.name for entry in os.scandir(self.path(prefix))
                    if not entry.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False

    def _delete_tree(self, prefix: str) -> None:
        import shutil
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def _rename(self, src: str, dst: str) -> None:
        target = self.path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(src), target)

    # -- async interface ---------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        return await trio.to_thread.run_sync(self._read, key)

    async def put(self, key: str, data: bytes) -> None:
        """Write a fact and commit it."""
        def write_and_commit() -> None:
            self._write_atomic(key, data)
            self._commit(key)
        await trio.to_thread.run_sync(write_and_commit)

    async def stat(self, key: str) -> int | None:
        return await trio.to_thread.run_sync(self._size, key)

    async def list(self, prefix: str) -> list[str]:
        return await trio.to_thread.run_sync(self._list, prefix)

    async def delete(self, key: str) -> bool:
        """Delete a fact and commit the deletion."""
        def delete_and_commit() -> bool:
            deleted = self._delete(key)
            if deleted:
                self._commit(key)
            return deleted
        return await trio.to_thread.run_sync(delete_and_commit)

    async def delete_tree(self, prefix: str) -> None:
        await trio.to_thread.run_sync(self._delete_tree, prefix)

    async def rename(self, src: str, dst: str) -> None:
        await trio.to_thread.run_sync(self._rename, src, dst)

    async def run(self, fn: Callable, *args: Any) -> Any:
        """Run a synchronous batch of store operations in a worker thread."""
        return await trio.to_thread.run_sync(fn, *args)

    async def read_range(self, key: str, start: int, end: int,
                         chunk_size: int = 4 << 20) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of a key in chunks."""
        if end - start <= chunk_size:
            yield await trio.to_thread.run_sync(self._read_span, key, start, end)
            return
        f = await trio.to_thread.run_sync(open, self.path(key), "rb")
        try:
            await trio.to_thread.run_sync(f.seek, start)
            remaining = end - start
            while remaining > 0:
                chunk = await trio.to_thread.run_sync(f.read, min(chunk_size, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            await trio.to_thread.run_sync(f.close)

    async def append_stream(self, key: str, chunks: AsyncIterator[bytes],
                            consume: Callable[[bytes], None], block: int = 1 << 20) -> int:
        """Append a stream to a key, calling consume(piece) beside each write
        in the same worker thread.  Returns bytes written."""
        f = await trio.to_thread.run_sync(open, self.path(key), "ab")
        written = pending_size = 0
        pending: list[bytes] = []

        def flush(batch: list[bytes]) -> None:
            for piece in batch:
                consume(piece)
                f.write(piece)

        try:
            async for chunk in chunks:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= block:
                    await trio.to_thread.run_sync(flush, pending)
                    written += pending_size
                    pending, pending_size = [], 0
            if pending:
                await trio.to_thread.run_sync(flush, pending)
                written += pending_size
        finally:
            await trio.to_thread.run_sync(f.close)
        return written


# ============================================================================
# Registry model: blobs, uploads, manifests, tags, referrers, links
# ============================================================================

def blob_key(digest: str) -> str:
    algorithm, encoded = parse_digest(digest)
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}"


def repo_key(name: str, kind: str, digest: str = "") -> str:
    if not digest:
        return f"repos/{name}/{kind}"
    algorithm, encoded = parse_digest(digest)
    return f"repos/{name}/{kind}/{algorithm}/{encoded}"


def tag_key(name: str, tag: str) -> str:
    return f"repos/{name}/_tags/{tag}"


def referrer_key(name: str, subject: str, digest: str) -> str:
    s_alg, s_hex = parse_digest(subject)
    algorithm, encoded = parse_digest(digest)
    return f"repos/{name}/_referrers/{s_alg}/{s_hex}/{algorithm}-{encoded}"


@dataclasses.dataclass
class Upload:
    """An in-progress blob upload; its bytes live in uploads/<id>/data."""
    id: str
    repo: str
    algorithm: str
    offset: int
    started: float
    hasher: Any = None
    resumable: bool = True
    lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)

    @property
    def data_key(self) -> str:
        return f"uploads/{self.id}/data"

    @property
    def state_key(self) -> str:
        return f"uploads/{self.id}/state.json"

    def state(self) -> bytes:
        return json.dumps({"repo": self.repo, "algorithm": self.algorithm, "offset": self.offset,
                           "started": self.started, "updated": time.time()}).encode()


@dataclasses.dataclass
class ManifestInfo:
    digest: str
    media_type: str
    size: int
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict | None = None
    config_media_type: str | None = None
    references: list[str] = dataclasses.field(default_factory=list)
    created: str = ""

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ManifestInfo":
        return cls(**json.loads(data))

    def referrer_descriptor(self) -> dict:
        descriptor: dict[str, Any] = {"mediaType": self.media_type, "size": self.size,
                                      "digest": self.digest}
        artifact_type = self.artifact_type or (
            self.config_media_type if self.media_type in IMAGE_MANIFEST_TYPES else None)
        if artifact_type:
            descriptor["artifactType"] = artifact_type
        if self.annotations:
            descriptor["annotations"] = self.annotations
        return descriptor


@dataclasses.dataclass
class PutManifestResult:
    digest: str
    tags: list[str]
    subject: str | None


def check_descriptor(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RegistryError("MANIFEST_INVALID", f"{where} must be a descriptor object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType")
    if not isinstance(digest, str):
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest is missing")
    try:
        parse_digest(digest)
    except RegistryError as exc:
        raise RegistryError("MANIFEST_INVALID", f"{where}.digest is invalid",
                            detail={"digest": digest[:300]}) from exc
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError("MANIFEST_INVALID", f"{where}.size must be a non-negative integer")
    if not isinstance(media_type, str) or not media_type:
        raise RegistryError("MANIFEST_INVALID", f"{where}.mediaType is missing")
    return value


def manifest_media_type(document: dict, content_type: str) -> str:
    """The manifest's own mediaType, checked against the request's Content-Type."""
    if content_type in GENERIC_CONTENT_TYPES:
        content_type = ""
    declared = document.get("mediaType")
    if document.get("schemaVersion") == 1 or declared in DOCKER_SCHEMA1 or content_type in DOCKER_SCHEMA1:
        raise RegistryError("MANIFEST_INVALID",
                            "Docker schema 1 manifests are not supported; push schema 2 or OCI")
    if document.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "schemaVersion must be 2")
    if declared is not None and not isinstance(declared, str):
        raise RegistryError("MANIFEST_INVALID", "mediaType must be a string")
    if declared and content_type and declared != content_type:
        raise RegistryError("MANIFEST_INVALID",
                            "Content-Type does not match the manifest's mediaType",
                            detail={"contentType": content_type, "mediaType": declared})
    media_type = declared or content_type
    if not media_type:
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise RegistryError("MANIFEST_INVALID", f"unsupported manifest media type {media_type[:200]}",
                            detail={"supported": list(MANIFEST_TYPES)})
    return media_type


def parse_manifest(body: bytes, content_type: str, digest: str) -> tuple[ManifestInfo, list[dict], list[dict]]:
    """Validate a manifest; return its info, the blobs and the child manifests it needs."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest must be a JSON object")
    media_type = manifest_media_type(document, content_type)
    blobs: list[dict] = []
    children: list[dict] = []
    config_media_type = None
    if media_type in IMAGE_MANIFEST_TYPES:
        config = check_descriptor(document.get("config"), "config")
        config_media_type = config["mediaType"]
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise RegistryError("MANIFEST_INVALID", "layers must be a list")
        blobs.append(config)
        for i, layer in enumerate(layers):
            check_descriptor(layer, f"layers[{i}]")
            if not (layer["mediaType"] in NONDISTRIBUTABLE_LAYER_TYPES and layer.get("urls")):
                blobs.append(layer)
    else:
        manifests = document.get("manifests")
        if not isinstance(manifests, list):
            raise RegistryError("MANIFEST_INVALID", "manifests must be a list")
        children = [check_descriptor(m, f"manifests[{i}]") for i, m in enumerate(manifests)]
    subject = document.get("subject")
    if subject is not None:
        subject = check_descriptor(subject, "subject")["digest"]
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise RegistryError("MANIFEST_INVALID", "artifactType must be a string")
    annotations = document.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise RegistryError("MANIFEST_INVALID", "annotations must be an object")
    info = ManifestInfo(digest=digest, media_type=media_type, size=len(body), subject=subject,
                        artifact_type=artifact_type or None, annotations=annotations or None,
                        config_media_type=config_media_type,
                        references=[d["digest"] for d in blobs + children], created=now_iso())
    return info, blobs, children


class LRU(collections.OrderedDict):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Registry:
    """The rules of the registry over a Store; knows nothing of HTTP."""

    def __init__(self, store: FileStore, config: dict):
        self.store = store
        self.config = config
        self.uploads: dict[str, Upload] = {}
        self.repo_locks: dict[str, trio.Lock] = collections.defaultdict(trio.Lock)
        self.repositories: set[str] = set()
        self.tags: dict[str, dict[str, str]] = {}
        self.manifests: LRU = LRU(20000)
        self.manifest_bytes: LRU = LRU(2000)
        self.links: LRU = LRU(200000)
        self.blob_sizes: LRU = LRU(200000)

    @property
    def settings(self) -> dict:
        return self.config["registry"]

    async def open(self) -> None:
        for name in ("blobs", "uploads", "repos"):
            self.store.path(name).mkdir(parents=True, exist_ok=True)
        self.repositories = set(await self.store.run(self._scan_repositories))

    def _scan_repositories(self) -> list[str]:
        root = self.store.path("repos")
        found = []
        for directory, subdirs, _ in os.walk(root):
            markers = {"_links", "_manifests", "_tags"} & set(subdirs)
            if markers:
                found.append(os.path.relpath(directory, root).replace(os.sep, "/"))
            subdirs[:] = [d for d in subdirs if not d.startswith("_")]
        return found

    def known(self, repo: str) -> bool:
        return repo in self.repositories

    # -- blobs -------------------------------------------------------------------

    async def is_linked(self, repo: str, digest: str) -> bool:
        return await self.blob_size(repo, digest) is not None

    async def blob_size(self, repo: str, digest: str) -> int | None:
        """The size of a blob this repository links, or None.  Both facts are
        cached: a link changes only under the repository lock, and content
        under a digest never changes."""
        parse_digest(digest)
        size = self.blob_sizes.get(digest)
        if size is not None and self.links.get((repo, digest)):
            return size
        size = await self.store.run(self._linked_size, repo, digest)
        if size is not None:
            self.links.put((repo, digest), True)
            self.blob_sizes.put(digest, size)
        return size

    def _linked_size(self, repo: str, digest: str) -> int | None:
        if self.store._size(repo_key(repo, "_links", digest)) is None:
            return None
        return self.store._size(blob_key(digest))

    def blob_chunks(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        return self.store.read_range(blob_key(digest), start, end)

    async def link_blob(self, repo: str, digest: str) -> None:
        await self.store.put(repo_key(repo, "_links", digest), digest.encode())
        self.note_link(repo, digest)

    def note_link(self, repo: str, digest: str) -> None:
        self.links.put((repo, digest), True)
        self.repositories.add(repo)

    async def unlink_blob(self, repo: str, digest: str) -> None:
        self.require_delete_enabled()
        parse_digest(digest)
        async with self.repo_locks[repo]:
            self.links.pop((repo, digest), None)
            if not await self.store.delete(repo_key(repo, "_links", digest)):
                raise RegistryError("BLOB_UNKNOWN", "blob unknown to repository", 404,
                                    detail={"digest": digest})

    async def mount_blob(self, repo: str, source: str, digest: str) -> bool:
        if not await self.is_linked(source, digest):
            return False
        async with self.repo_locks[repo]:
            await self.link_blob(repo, digest)
        return True

    def require_delete_enabled(self) -> None:
        if not self.settings["delete_enabled"]:
            raise RegistryError("UNSUPPORTED", "deletion is disabled on this registry", 405)

    # -- uploads -----------------------------------------------------------------

    async def start_upload(self, repo: str, algorithm: str = "sha256", resumable: bool = True) -> Upload:
        if algorithm not in DIGEST_ALGORITHMS:
            raise RegistryError("DIGEST_INVALID", f"unsupported digest algorithm {algorithm[:50]}",
                                detail={"supported": list(DIGEST_ALGORITHMS)})
        upload = Upload(id=str(uuid.uuid4()), repo=repo, algorithm=algorithm, offset=0,
                        started=time.time(), hasher=hashlib.new(algorithm), resumable=resumable)

        def create() -> None:
            self.store.path(f"uploads/{upload.id}").mkdir(parents=True)
            self.store.path(upload.data_key).touch()
            if resumable:
                self.store._write_atomic(upload.state_key, upload.state())

        await self.store.run(create)
        self.uploads[upload.id] = upload
        return upload

    async def get_upload(self, repo: str, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None and re.fullmatch(r"[0-9a-f-]{36}", upload_id):
            upload = await self.store.run(self._resume_upload, upload_id)
            if upload is not None:
                upload = self.uploads.setdefault(upload_id, upload)
        if upload is None or upload.repo != repo:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404,
                                detail={"uuid": upload_id[:100]})
        return upload

    def _resume_upload(self, upload_id: str) -> Upload | None:
        """Reload an upload after a restart: keep the bytes up to the offset
        recorded after the last complete chunk, and rebuild the running hash."""
        try:
            state = json.loads(self.store._read(f"uploads/{upload_id}/state.json") or b"")
            upload = Upload(id=upload_id, repo=state["repo"], algorithm=state["algorithm"],
                            offset=state["offset"], started=state["started"])
        except (ValueError, KeyError, TypeError):
            return None
        path = self.store.path(upload.data_key)
        with open(path, "r+b") as f:
            f.truncate(upload.offset)
            upload.offset = os.fstat(f.fileno()).st_size
        upload.hasher = self._hash_file(path, upload.algorithm)
        return upload

    @staticmethod
    def _hash_file(path: Path, algorithm: str) -> Any:
        hasher = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                hasher.update(block)
        return hasher

    async def append_upload(self, upload: Upload, chunks: AsyncIterator[bytes],
                            start: int | None = None, length: int | None = None) -> None:
        """Append a chunk; on any failure the upload returns to its previous offset."""
        if start is not None and start != upload.offset:
            raise RegistryError("BLOB_UPLOAD_INVALID", "chunk out of order", 416,
                                detail={"expected_offset": upload.offset, "got": start},
                                headers=self.upload_headers(upload))
        limit = self.settings["max_blob_size"]
        if limit and length is not None and upload.offset + length > limit:
            raise RegistryError("SIZE_INVALID", f"blob exceeds the {limit} byte limit", 413)
        hasher = upload.hasher.copy()
        received = 0

        def consume(block: bytes) -> None:
            nonlocal received
            received += len(block)
            if limit and upload.offset + received > limit:
                raise RegistryError("SIZE_INVALID", f"blob exceeds the {limit} byte limit", 413)
            hasher.update(block)

        try:
            await self.store.append_stream(upload.data_key, chunks, consume)
            if length is not None and received != length:
                raise RegistryError("SIZE_INVALID", "chunk length does not match its range",
                                    detail={"expected": length, "received": received})
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.store.run(self._truncate, upload.data_key, upload.offset)
            raise
        upload.offset += received
        upload.hasher = hasher
        if upload.resumable:
            await self.store.run(self.store._write_atomic, upload.state_key, upload.state())

    def _truncate(self, key: str, size: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.store.path(key), size)

    async def commit_upload(self, upload: Upload, digest: str) -> str:
        algorithm, encoded = parse_digest(digest)
        if algorithm == upload.algorithm:
            actual = upload.hasher.hexdigest()
        else:
            actual = (await self.store.run(self._hash_file, self.store.path(upload.data_key),
                                           algorithm)).hexdigest()
        if actual != encoded:
            raise RegistryError("DIGEST_INVALID", "provided digest did not match uploaded content",
                                detail={"expected": digest, "actual": f"{algorithm}:{actual}"})
        self.uploads.pop(upload.id, None)
        async with self.repo_locks[upload.repo]:
            await self.store.run(self._commit_blob, upload, digest)
            self.note_link(upload.repo, digest)
        return digest

    def _commit_blob(self, upload: Upload, digest: str) -> None:
        """Move the upload's bytes into the blob store (unless an identical
        blob is already there), link them to the repository, commit both."""
        key = blob_key(digest)
        if self.store._size(key) is None:
            self.store._fsync_file(upload.data_key)
            self.store._rename(upload.data_key, key)
        self._link_and_commit(upload.repo, digest)
        self.store._delete_tree(f"uploads/{upload.id}")

    def _write_link(self, repo: str, digest: str) -> None:
        self.store._write_atomic(repo_key(repo, "_links", digest), digest.encode())

    async def cancel_upload(self, upload: Upload) -> None:
        self.uploads.pop(upload.id, None)
        await self.store.delete_tree(f"uploads/{upload.id}")

    async def put_blob(self, repo: str, digest: str, chunks: AsyncIterator[bytes],
                       length: int | None) -> str:
        algorithm, _ = parse_digest(digest)
        if length is not None and length <= SMALL_BLOB:
            return await self.put_small_blob(repo, digest, chunks, length)
        upload = await self.start_upload(repo, algorithm, resumable=False)
        try:
            await self.append_upload(upload, chunks, length=length)
            return await self.commit_upload(upload, digest)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.cancel_upload(upload)
            raise

    async def put_small_blob(self, repo: str, digest: str, chunks: AsyncIterator[bytes],
                             length: int) -> str:
        """A small monolithic push: gathered in memory, checked and stored in
        one worker-thread call, then linked and committed in another."""
        limit = self.settings["max_blob_size"]
        if limit and length > limit:
            raise RegistryError("SIZE_INVALID", f"blob exceeds the {limit} byte limit", 413)
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > length:
                break
        if len(body) != length:
            raise RegistryError("SIZE_INVALID", "body length does not match Content-Length",
                                detail={"expected": length, "received": len(body)})
        await self.store.run(self._store_small_blob, digest, bytes(body))
        async with self.repo_locks[repo]:
            await self.store.run(self._link_and_commit, repo, digest)
            self.note_link(repo, digest)
        return digest

    def _store_small_blob(self, digest: str, body: bytes) -> None:
        algorithm, _ = parse_digest(digest)
        actual = digest_of(body, algorithm)
        if actual != digest:
            raise RegistryError("DIGEST_INVALID", "provided digest did not match uploaded content",
                                detail={"expected": digest, "actual": actual})
        if self.store._size(blob_key(digest)) != len(body):
            self.store._write_atomic(blob_key(digest), body, durable=True)

    def _link_and_commit(self, repo: str, digest: str) -> None:
        self._write_link(repo, digest)
        self.store._commit(repo_key(repo, "_links", digest))

    def upload_headers(self, upload: Upload) -> dict[str, str]:
        return {"Location": f"/v2/{upload.repo}/blobs/uploads/{upload.id}",
                "Range": f"0-{max(upload.offset - 1, 0)}",
                "Docker-Upload-UUID": upload.id}

    async def purge_stale_uploads(self, max_age: float) -> int:
        def purge() -> list[str]:
            removed = []
            cutoff = time.time() - max_age
            for upload_id in self.store._list("uploads"):
                try:
                    updated = json.loads(self.store._read(f"uploads/{upload_id}/state.json") or b"{}")\
                        .get("updated", 0)
                except ValueError:
                    updated = 0
                if updated < cutoff and self.store.path(f"uploads/{upload_id}").stat().st_mtime < cutoff:
                    self.store._delete_tree(f"uploads/{upload_id}")
                    removed.append(upload_id)
            return removed

        removed = await self.store.run(purge)
        for upload_id in removed:
            self.uploads.pop(upload_id, None)
        return len(removed)

    # -- manifests and tags --------------------------------------------------------

    async def manifest_info(self, repo: str, digest: str) -> ManifestInfo | None:
        info = self.manifests.get((repo, digest))
        if info is None:
            raw = await self.store.get(repo_key(repo, "_manifests", digest))
            try:
                info = ManifestInfo.from_json(raw)
            except (TypeError, ValueError):
                return None
            self.manifests.put((repo, digest), info)
        return info

    async def repo_tags(self, repo: str) -> dict[str, str]:
        tags = self.tags.get(repo)
        if tags is None:
            tags = await self.store.run(self._load_tags, repo)
            self.tags[repo] = tags
        return tags

    def _load_tags(self, repo: str) -> dict[str, str]:
        prefix = f"repos/{repo}/_tags"
        tags = {}
        for name, raw in self.store._read_many(f"{prefix}/{t}" for t in self.store._list(prefix)).items():
            with contextlib.suppress(ValueError, KeyError):
                tags[name.rsplit("/", 1)[1]] = json.loads(raw)["digest"]
        return tags

    async def resolve(self, repo: str, reference: str) -> ManifestInfo:
        if is_digest(reference):
            parse_digest(reference)
            digest = reference
        else:
            validate_tag(reference)
            digest = (await self.repo_tags(repo)).get(reference)
        info = await self.manifest_info(repo, digest) if digest else None
        if info is None:
            code, message = ("MANIFEST_UNKNOWN", "manifest unknown to registry") if self.known(repo) \
                else ("NAME_UNKNOWN", "repository name not known to registry")
            raise RegistryError(code, message, 404, detail={"name": repo, "reference": reference[:300]})
        return info

    async def manifest_content(self, info: ManifestInfo) -> bytes:
        data = self.manifest_bytes.get(info.digest)
        if data is None:
            data = await self.store.get(blob_key(info.digest))
            if data is None:
                raise RegistryError("MANIFEST_UNKNOWN", "manifest content is missing", 404)
            self.manifest_bytes.put(info.digest, data)
        return data

    async def put_manifest(self, repo: str, reference: str, body: bytes, content_type: str,
                           extra_tags: list[str]) -> PutManifestResult:
        limit = self.settings["max_manifest_size"]
        if limit and len(body) > limit:
            raise RegistryError("SIZE_INVALID", f"manifest exceeds the {limit} byte limit", 413)
        if is_digest(reference):
            algorithm, _ = parse_digest(reference)
            digest = digest_of(body, algorithm)
            if digest != reference:
                raise RegistryError("DIGEST_INVALID", "manifest digest does not match its content",
                                    detail={"expected": reference, "actual": digest})
            tags = extra_tags
        else:
            digest = digest_of(body)
            tags = [reference, *extra_tags]
        tags = list(dict.fromkeys(validate_tag(t) for t in tags))
        info, blobs, children = parse_manifest(body, content_type, digest)
        async with self.repo_locks[repo]:
            await self.require_references(repo, blobs, children)
            await self.store.run(self._write_manifest, repo, info, body, tags)
            self.manifests.put((repo, digest), info)
            self.links.put((repo, digest), True)
            self.manifest_bytes.put(digest, body)
            repo_tags = await self.repo_tags(repo)
            for tag in tags:
                repo_tags[tag] = digest
            self.repositories.add(repo)
        return PutManifestResult(digest=digest, tags=tags, subject=info.subject)

    async def require_references(self, repo: str, blobs: list[dict], children: list[dict]) -> None:
        missing = []
        for descriptor in blobs:
            if not await self.is_linked(repo, descriptor["digest"]):
                missing.append(descriptor["digest"])
        for descriptor in children:
            if await self.manifest_info(repo, descriptor["digest"]) is None:
                missing.append(descriptor["digest"])
        if missing:
            raise RegistryError("MANIFEST_BLOB_UNKNOWN",
                                "manifest references blobs or manifests unknown to this repository",
                                detail={"missing": missing[:50]})

    def _write_manifest(self, repo: str, info: ManifestInfo, body: bytes, tags: list[str]) -> None:
        """Content first, then the facts that point at it: a crash leaves
        no tag on a manifest whose bytes are not durable."""
        if self.store._size(blob_key(info.digest)) != len(body):
            self.store._write_atomic(blob_key(info.digest), body, durable=True)
        self._write_link(repo, info.digest)
        self.store._write_atomic(repo_key(repo, "_manifests", info.digest), info.to_json())
        if info.subject and self.settings["referrers_enabled"]:
            self.store._write_atomic(referrer_key(repo, info.subject, info.digest),
                                     json.dumps(info.referrer_descriptor()).encode())
        for tag in tags:
            self.store._write_atomic(tag_key(repo, tag),
                                     json.dumps({"digest": info.digest, "pushed": info.created}).encode())
        self.store._commit(repo_key(repo, "_manifests", info.digest))

    async def delete_manifest(self, repo: str, reference: str) -> None:
        self.require_delete_enabled()
        if not is_digest(reference):
            await self.delete_tag(repo, reference)
            return
        info = await self.resolve(repo, reference)
        async with self.repo_locks[repo]:
            tags = await self.repo_tags(repo)
            doomed = [tag for tag, digest in tags.items() if digest == info.digest]
            await self.store.run(self._delete_manifest_files, repo, info, doomed)
            for tag in doomed:
                tags.pop(tag, None)
            self.manifests.pop((repo, info.digest), None)
            self.links.pop((repo, info.digest), None)

    def _delete_manifest_files(self, repo: str, info: ManifestInfo, tags: list[str]) -> None:
        for tag in tags:
            self.store._delete(tag_key(repo, tag))
        if info.subject:
            self.store._delete(referrer_key(repo, info.subject, info.digest))
        self.store._delete(repo_key(repo, "_manifests", info.digest))
        self.store._delete(repo_key(repo, "_links", info.digest))
        self.store._commit(repo_key(repo, "_links", info.digest))

    async def delete_tag(self, repo: str, tag: str) -> None:
        validate_tag(tag)
        async with self.repo_locks[repo]:
            tags = await self.repo_tags(repo)
            if tag not in tags:
                raise RegistryError("MANIFEST_UNKNOWN", "tag unknown to repository", 404,
                                    detail={"name": repo, "tag": tag})
            await self.store.delete(tag_key(repo, tag))
            tags.pop(tag, None)

    async def list_tags(self, repo: str) -> list[str]:
        if not self.known(repo):
            raise RegistryError("NAME_UNKNOWN", "repository name not known to registry", 404,
                                detail={"name": repo})
        return sorted(await self.repo_tags(repo))

    def list_repositories(self) -> list[str]:
        return sorted(self.repositories)

    async def referrers(self, repo: str, subject: str, artifact_type: str | None) -> list[dict]:
        s_alg, s_hex = parse_digest(subject)
        prefix = f"repos/{repo}/_referrers/{s_alg}/{s_hex}"

        def read_all() -> list[dict]:
            raws = self.store._read_many(f"{prefix}/{n}" for n in self.store._list(prefix))
            found = []
            for _, raw in sorted(raws.items()):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(raw))
            return found

        descriptors = await self.store.run(read_all)
        if artifact_type is not None:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        return descriptors


# ============================================================================
# Identity: users, tokens, roles, groups, permissions
# ============================================================================

ACTIONS = ("VIEW", "CREATE", "UPDATE", "DELETE", "PUSH", "PULL", "ADMIN", "LOGIN", "MIGRATE")
RESOURCES = ("IMAGE", "TAG", "USER", "GROUP", "SYSTEM", "TASK", "WEBUI")
PERMISSION_RE = re.compile(r"(?P<action>[A-Z]+):(?P<resource>[A-Z]+)(?:@(?P<globs>\S+))?")
REGISTRY_ACTIONS = {"pull": "PULL", "push": "PUSH", "delete": "DELETE"}

DEFAULT_ROLES: dict[str, dict] = {
    "administrator": {"description": "Everything, everywhere", "permissions": ["ADMIN:SYSTEM"]},
    "developer": {"description": "Push, pull and tag images",
                  "permissions": ["LOGIN:WEBUI", "VIEW:IMAGE", "PULL:IMAGE", "PUSH:IMAGE",
                                  "DELETE:IMAGE", "VIEW:TAG", "CREATE:TAG", "UPDATE:TAG",
                                  "DELETE:TAG", "VIEW:TASK"]},
    "reader": {"description": "Browse and pull images",
               "permissions": ["LOGIN:WEBUI", "VIEW:IMAGE", "PULL:IMAGE", "VIEW:TAG"]},
    "anonymous": {"description": "Requests without credentials", "permissions": []},
}
DEFAULT_GROUPS: dict[str, dict] = {
    "admins": {"description": "Administrators", "roles": ["administrator"]},
    "developers": {"description": "Developers", "roles": ["developer"]},
    "readers": {"description": "Read-only users", "roles": ["reader"]},
}
ANONYMOUS_ROLE = "anonymous"


def merge_rbac_defaults(configured: dict, defaults: dict) -> dict:
    merged = copy.deepcopy(defaults)
    merged.update(configured)
    return merged


@dataclasses.dataclass(frozen=True)
class Permission:
    action: str
    resource: str
    globs: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Permission":
        match = PERMISSION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if not match or match["action"] not in ACTIONS or match["resource"] not in RESOURCES:
            raise ConfigError(f"invalid permission {text!r}: expected ACTION:RESOURCE[@glob,...] "
                              f"with ACTION in {', '.join(ACTIONS)} and RESOURCE in {', '.join(RESOURCES)}")
        globs = tuple(g for g in (match["globs"] or "").split(",") if g)
        return cls(match["action"], match["resource"], globs)

    def grants(self, action: str, resource: str, repository: str | None, user: str | None) -> bool:
        if (self.action, self.resource) == ("ADMIN", "SYSTEM"):
            return True
        if self.action != action or self.resource != resource:
            return False
        if not self.globs or repository is None:
            return True
        return any(glob_matches(glob, repository, user) for glob in self.globs)


def glob_matches(glob: str, repository: str, user: str | None) -> bool:
    """'*' is one path component, '**' any number; ${user} is the caller's name."""
    if "${user}" in glob:
        if not user:
            return False
        glob = glob.replace("${user}", user)
    return glob_pattern(glob).fullmatch(repository) is not None


@functools.lru_cache(maxsize=4096)
def glob_pattern(glob: str) -> re.Pattern:
    pattern = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                      for part in re.split(r"(\*\*|\*)", glob))
    return re.compile(pattern.replace("/.*", "(?:/.*)?"))


def validate_rbac_tables(roles: dict, groups: dict) -> None:
    for name, role in roles.items():
        if not isinstance(role, dict) or not isinstance(role.get("permissions", []), list):
            raise ConfigError(f"[roles.{name}] needs a permissions list")
        for text in role.get("permissions", []):
            Permission.parse(text)
    for name, group in groups.items():
        if not isinstance(group, dict) or not isinstance(group.get("roles", []), list):
            raise ConfigError(f"[groups.{name}] needs a roles list")
        for role in group.get("roles", []):
            if role not in roles:
                raise ConfigError(f"[groups.{name}] names unknown role {role!r}")


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str | None
    groups: tuple[str, ...] = ()
    token_access: frozenset | None = None

    @property
    def anonymous(self) -> bool:
        return self.name is None


ANONYMOUS = Identity(None)


class Policy:
    """Roles and groups from the configuration, compiled for quick checks."""

    def __init__(self, config: dict):
        self.roles = {name: [Permission.parse(p) for p in role.get("permissions", [])]
                      for name, role in config["roles"].items()}
        self.groups = {name: list(group.get("roles", [])) for name, group in config["groups"].items()}
        self.by_groups: dict[tuple[str, ...], list[Permission]] = {}

    def permissions(self, identity: Identity) -> list[Permission]:
        found = self.by_groups.get(identity.groups)
        if found is None:
            roles = [ANONYMOUS_ROLE]
            for group in identity.groups:
                roles += self.groups.get(group, [])
            found = [p for role in dict.fromkeys(roles) for p in self.roles.get(role, [])]
            self.by_groups[identity.groups] = found
        return found

    def allows(self, identity: Identity, action: str, resource: str,
               repository: str | None = None) -> bool:
        return any(p.grants(action, resource, repository, identity.name)
                   for p in self.permissions(identity))

    def registry_actions(self, identity: Identity, repository: str) -> list[str]:
        return [verb for verb, action in REGISTRY_ACTIONS.items()
                if self.allows(identity, action, "IMAGE", repository)]

    def is_admin(self, identity: Identity) -> bool:
        return any((p.action, p.resource) == ("ADMIN", "SYSTEM") for p in self.permissions(identity))


def hash_password(password: str, rounds: int) -> str:
    import bcrypt
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def check_password(password: str, hashed: str) -> bool:
    import bcrypt
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


class UserFile:
    """users.json, changed under an exclusive lock so the CLI and a running
    server can both edit it; each change is an atomic replace."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / "users.json"
        self.lock_path = data_dir / ".users.lock"

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text()).get("users", {})
        except FileNotFoundError:
            return {}

    def stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def modify(self, change: Callable[[dict], Any]) -> Any:
        with self.locked():
            users = self.read()
            result = change(users)
            write_private(self.path, json.dumps({"users": users}, indent=2, sort_keys=True).encode())
            return result


def write_private(path: Path, data: bytes) -> None:
    """Atomically write a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


class UserError(ValueError):
    pass


def check_username(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name or ""):
        raise UserError("usernames are 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
    return name


def check_password_policy(password: str, config: dict) -> None:
    minimum = config["auth"]["min_password_length"]
    if not isinstance(password, str) or len(password) < minimum:
        raise UserError(f"passwords must be at least {minimum} characters long")


def user_record(password_hash: str, groups: list[str], default_password: bool = False) -> dict:
    return {"password": password_hash, "groups": sorted(set(groups)), "created": now_iso(),
            "id": secrets.token_hex(8), "token_version": 0, "default_password": default_password}


class Users:
    """The user database as the server sees it: cached, reloaded when the file changes."""

    def __init__(self, data_dir: Path, config: dict):
        self.file = UserFile(data_dir)
        self.config = config
        self.users: dict[str, dict] = {}
        self.stamp: tuple[int, int] | None = None
        self.dummy_hash: str | None = None

    def load(self) -> bool:
        stamp = self.file.stamp()
        if stamp == self.stamp:
            return False
        self.users, self.stamp = self.file.read(), stamp
        return True

    def ensure_admin(self) -> None:
        """Create 'admin' in group 'admins' on the first start."""
        if self.file.path.exists():
            return
        password = self.config["auth"]["initial_admin_password"] or "admin"
        record = user_record(hash_password(password, self.config["auth"]["bcrypt_rounds"]),
                             ["admins"], default_password=password == "admin")
        self.file.modify(lambda users: users.setdefault("admin", record))

    def warn_default_password(self) -> None:
        if self.users.get("admin", {}).get("default_password"):
            log.warning("the admin user still has the default password 'admin': change it with "
                        "'distroface user passwd admin' or in the web UI")

    def identity(self, name: str) -> Identity | None:
        record = self.users.get(name)
        return Identity(name, tuple(record.get("groups", ()))) if record else None

    def token_version(self, name: str) -> str | None:
        """Changes when the password changes or the user is deleted and made
        anew, revoking refresh tokens and cached passwords."""
        record = self.users.get(name)
        if not record:
            return None
        return f"{record.get('id', record.get('created'))}.{record.get('token_version', 0)}"

    async def verify(self, name: str, password: str) -> Identity | None:
        record = self.users.get(name)
        if record is None:
            if self.dummy_hash is None:
                self.dummy_hash = await trio.to_thread.run_sync(hash_password, "x", self.config["auth"]["bcrypt_rounds"])
            await trio.to_thread.run_sync(check_password, password, self.dummy_hash)
            return None
        if not await trio.to_thread.run_sync(check_password, password, record["password"]):
            return None
        return Identity(name, tuple(record.get("groups", ())))

    async def change(self, change: Callable[[dict], Any]) -> Any:
        result = await trio.to_thread.run_sync(self.file.modify, change)
        self.load()
        return result


def add_user(users: dict, name: str, password_hash: str, groups: list[str]) -> None:
    if name in users:
        raise UserError(f"user {name} already exists")
    users[name] = user_record(password_hash, groups)


def set_password(users: dict, name: str, password_hash: str) -> None:
    record = require_user(users, name)
    record.update(password=password_hash, default_password=False,
                  token_version=record.get("token_version", 0) + 1)


def require_user(users: dict, name: str) -> dict:
    if name not in users:
        raise UserError(f"no such user: {name}")
    return users[name]


def delete_user(users: dict, name: str) -> None:
    require_user(users, name)
    del users[name]


def set_groups(users: dict, name: str, groups: list[str]) -> None:
    require_user(users, name)["groups"] = sorted(set(groups))


class SigningKey:
    """The HMAC key that signs every token, made on first start, kept 0600."""

    def __init__(self, data_dir: Path):
        path = data_dir / "secret" / "jwt.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(path, secrets.token_hex(32).encode())
        os.chmod(path, 0o600)
        self.secret = path.read_bytes().strip()
        self.kid = hashlib.sha256(self.secret).hexdigest()[:16]


class TokenError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Scope | None":
        """resourcetype[(class)]:resourcename:action[,action]* — the name may
        itself hold a ':' (a registry host:port), so split at the first and last."""
        if text.count(":") < 2:
            return None
        resource_type, rest = text.split(":", 1)
        name, actions = rest.rsplit(":", 1)
        resource_type = re.sub(r"\(.*\)$", "", resource_type)
        if not re.fullmatch(r"[a-z0-9]+", resource_type) or not name:
            return None
        return cls(resource_type, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


class TokenService:
    """Docker token authentication: JWTs with iss, sub, aud, exp, nbf, iat, jti, access."""

    def __init__(self, key: SigningKey, config: dict, revoked_path: Path):
        self.key = key
        self.config = config
        self.revoked_path = revoked_path
        try:
            self.revoked: dict[str, float] = json.loads(revoked_path.read_text())
        except (FileNotFoundError, ValueError):
            self.revoked = {}

    @property
    def auth(self) -> dict:
        return self.config["auth"]

    def issue(self, subject: str | None, access: list[dict], lifetime: int | None = None,
              extra: dict | None = None) -> tuple[str, int, float]:
        import jwt
        lifetime = lifetime or self.auth["token_lifetime"]
        now = time.time()
        claims = {"iss": self.auth["issuer"], "sub": subject or "", "aud": self.auth["service"],
                  "exp": int(now + lifetime), "nbf": int(now) - 1, "iat": int(now),
                  "jti": secrets.token_urlsafe(16), "access": access, **(extra or {})}
        token = jwt.encode(claims, self.key.secret, algorithm="HS256", headers={"kid": self.key.kid})
        return token, lifetime, now

    def verify(self, token: str, purpose: str = "access") -> dict:
        import jwt
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self.key.kid:
                raise TokenError("token signed with an unknown key")
            claims = jwt.decode(token, self.key.secret, algorithms=["HS256"],
                                audience=self.auth["service"], issuer=self.auth["issuer"],
                                options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]})
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from exc
        if claims.get("purpose", "access") != purpose:
            raise TokenError(f"not an {purpose} token")
        if claims["jti"] in self.revoked:
            raise TokenError("token revoked")
        return claims

    def issue_refresh(self, subject: str, version: str) -> str:
        token, _, _ = self.issue(subject, [], self.auth["refresh_token_lifetime"],
                                 {"purpose": "refresh", "ver": version})
        return token

    def revoke(self, claims: dict) -> None:
        """Remember a logged-out refresh token until it would expire anyway."""
        now = time.time()
        self.revoked = {jti: exp for jti, exp in self.revoked.items() if exp > now}
        self.revoked[claims["jti"]] = claims["exp"]
        write_private(self.revoked_path, json.dumps(self.revoked).encode())


class LoginThrottle:
    """Counts failed logins per address and per user within a window."""

    def __init__(self, config: dict):
        self.config = config
        self.failures: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def _recent(self, key: str) -> collections.deque:
        window = self.config["auth"]["login_window"]
        failures = self.failures[key]
        while failures and failures[0] < time.monotonic() - window:
            failures.popleft()
        return failures

    def retry_after(self, address: str, user: str) -> int:
        limit = self.config["auth"]["login_max_failures"]
        for key in (f"ip:{address}", f"user:{user[:64]}"):
            if key not in self.failures:
                continue
            failures = self._recent(key)
            if len(failures) >= limit:
                return max(1, int(failures[0] + self.config["auth"]["login_window"] - time.monotonic()) + 1)
        return 0

    def failed(self, address: str, user: str) -> None:
        if len(self.failures) > 10000:
            for key in [k for k in self.failures if not self._recent(k)]:
                del self.failures[key]
        for key in (f"ip:{address}", f"user:{user[:64]}"):
            self.failures[key].append(time.monotonic())


class Throttled(Exception):
    def __init__(self, retry_after: int):
        super().__init__("too many failed logins")
        self.retry_after = retry_after


class Authorizer:
    """Decides who a request is and what it may do, for /v2, /auth/token and /api/v1."""

    def __init__(self, config: dict, data_dir: Path):
        self.config = config
        self.users = Users(data_dir, config)
        self.key_dir = data_dir
        self.tokens: TokenService | None = None
        self.throttle = LoginThrottle(config)
        self.basic_cache: dict[tuple[str, str], tuple[float, int]] = {}
        self.policy = Policy(config)

    def open(self) -> None:
        self.users.ensure_admin()
        self.users.load()
        self.users.warn_default_password()
        self.tokens = TokenService(SigningKey(self.key_dir), self.config,
                                   self.key_dir / "secret" / "revoked.json")

    def reload_policy(self) -> None:
        self.policy = Policy(self.config)

    # -- credentials ---------------------------------------------------------------

    async def login(self, username: str, password: str, address: str) -> Identity | None:
        """Check a password, throttling repeated failures (raises Throttled).
        A password verified within basic_cache_seconds skips bcrypt."""
        cache_key = (username, hashlib.sha256(password.encode()).hexdigest())
        cached = self.basic_cache.get(cache_key)
        if cached and cached[0] > time.monotonic() and cached[1] == self.users.token_version(username):
            return self.users.identity(username)
        retry = self.throttle.retry_after(address, username)
        if retry:
            raise Throttled(retry)
        identity = await self.users.verify(username, password)
        if identity is None:
            self.throttle.failed(address, username)
            log.warning("failed login for %r from %s", username[:64], address)
            return None
        expires = time.monotonic() + self.config["auth"]["basic_cache_seconds"]
        self.basic_cache = {k: v for k, v in self.basic_cache.items() if v[0] > time.monotonic()}
        self.basic_cache[cache_key] = (expires, self.users.token_version(username))
        return identity

    async def basic_identity(self, header: str, address: str) -> Identity | None:
        try:
            username, _, password = base64.b64decode(header, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return await self.login(username, password, address)

    def bearer_identity(self, token: str, purpose: str = "access") -> Identity:
        claims = self.tokens.verify(token, purpose)
        subject = claims["sub"] or None
        identity = self.users.identity(subject) if subject else ANONYMOUS
        if identity is None:
            raise TokenError("unknown subject")
        access = frozenset((entry.get("type"), entry.get("name"), action)
                           for entry in claims.get("access") or [] if isinstance(entry, dict)
                           for action in entry.get("actions") or [])
        return dataclasses.replace(identity, token_access=access)

    async def identify(self, headers: dict[str, str], address: str, token_purpose: str = "access") -> Identity:
        """Who sent a request: registry tokens ('access') serve /v2 only,
        web session tokens ('web') serve /api/v1 only."""
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            try:
                return self.bearer_identity(value.strip(), token_purpose)
            except TokenError as exc:
                raise RegistryError("UNAUTHORIZED", f"invalid token: {exc}", 401) from None
        if scheme == "basic":
            try:
                identity = await self.basic_identity(value.strip(), address)
            except Throttled as exc:
                raise RegistryError("TOOMANYREQUESTS", "too many failed logins", 429,
                                    headers={"Retry-After": str(exc.retry_after)}) from None
            if identity is None:
                raise RegistryError("UNAUTHORIZED", "invalid username or password", 401)
            return identity
        return ANONYMOUS

    # -- decisions -----------------------------------------------------------------

    def grants(self, identity: Identity, repository: str | None, action: str) -> bool:
        """May this identity do a registry action ('pull', 'push', 'delete',
        'catalog', 'login') on a repository, by its token and by the rules now?"""
        if action == "login":
            return not identity.anonymous or identity.token_access is not None or \
                bool(self.policy.permissions(identity))
        if action == "catalog":
            token_ok = identity.token_access is None or ("registry", "catalog", "*") in identity.token_access
            return token_ok and (self.policy.allows(identity, "VIEW", "IMAGE")
                                 or self.policy.allows(identity, "PULL", "IMAGE"))
        if identity.token_access is not None and ("repository", repository, action) not in identity.token_access \
                and ("repository", repository, "*") not in identity.token_access:
            return False
        return self.policy.allows(identity, REGISTRY_ACTIONS[action], "IMAGE", repository)

    def challenge(self, request: "HttpRequest", repository: str | None, action: str,
                  error: str | None = None) -> str:
        auth = self.config["auth"]
        realm = auth["realm"] or (self.config["server"]["public_url"] or request.base_url).rstrip("/") + "/auth/token"
        parts = [f'realm="{realm}"', f'service="{auth["service"]}"']
        if action == "catalog":
            parts.append('scope="registry:catalog:*"')
        elif repository:
            actions = "pull,push" if action == "push" else action
            parts.append(f'scope="repository:{repository}:{actions}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    async def authorize(self, request: "HttpRequest", repository: str | None, action: str) -> Identity:
        if not self.config["auth"]["enabled"]:
            return ANONYMOUS
        address = (request.scope.get("client") or ("-",))[0]
        try:
            identity = await self.identify(request.headers, address)
        except RegistryError as exc:
            if exc.status == 401:
                exc.headers["WWW-Authenticate"] = self.challenge(request, repository, action)
            raise
        request.user = identity.name
        if self.grants(identity, repository, action):
            return identity
        if identity.anonymous and identity.token_access is None:
            raise RegistryError("UNAUTHORIZED", "authentication required", 401,
                                headers={"WWW-Authenticate": self.challenge(request, repository, action)})
        if identity.token_access is not None:
            raise RegistryError("DENIED", "requested access to the resource is denied", 401,
                                detail={"repository": repository, "action": action},
                                headers={"WWW-Authenticate": self.challenge(
                                    request, repository, action, "insufficient_scope")})
        raise RegistryError("DENIED", "requested access to the resource is denied", 403,
                            detail={"repository": repository, "action": action})

    def may_pull(self, identity: Identity, repository: str) -> bool:
        """By the rules alone (a catalog lists what the caller may pull)."""
        return not self.config["auth"]["enabled"] or self.policy.allows(identity, "PULL", "IMAGE", repository)

    def may_act(self, identity: Identity, repository: str, action: str) -> bool:
        """By the caller's token, if any, and the rules."""
        return not self.config["auth"]["enabled"] or self.grants(identity, repository, action)

    def grant_scopes(self, identity: Identity, scopes: list[Scope]) -> list[dict]:
        """The intersection of what was asked and what the rules allow."""
        access = []
        for scope in scopes:
            if scope.type == "registry" and scope.name == "catalog":
                if "*" in scope.actions and self.grants(dataclasses.replace(identity, token_access=None), None, "catalog"):
                    access.append({"type": "registry", "name": "catalog", "actions": ["*"]})
                continue
            if scope.type != "repository" or len(scope.name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(scope.name):
                continue
            allowed = self.policy.registry_actions(identity, scope.name)
            wanted = allowed if "*" in scope.actions else [a for a in scope.actions if a in allowed]
            if wanted:
                access.append({"type": "repository", "name": scope.name, "actions": sorted(set(wanted))})
        return access


# ============================================================================
# HTTP: /v2 (OCI + Docker) as a lean ASGI router, everything else in Quart
# ============================================================================

class ClientDisconnected(Exception):
    pass


class HttpRequest:
    """The parts of an ASGI HTTP request the registry reads."""

    def __init__(self, scope: dict, receive: Callable):
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                           keep_blank_values=True)
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        self.headers = headers
        self.receive = receive
        self.user: str | None = None
        self.body_read = not self.has_body()

    def has_body(self) -> bool:
        return "transfer-encoding" in self.headers or self.headers.get("content-length", "0") not in ("0", "")

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise RegistryError("SIZE_INVALID", "invalid Content-Length")
        return int(value)

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            body = message.get("body", b"")
            if not message.get("more_body", False):
                self.body_read = True
            if body:
                yield body
            if self.body_read:
                return

    async def finish_body(self, reply: Reply, limit: int = 1 << 20) -> None:
        """A reply sent before the request body was read: read a small body to
        its end, so the connection can carry the next request; close it otherwise."""
        if self.body_read:
            return
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) <= limit:
            with trio.move_on_after(5), contextlib.suppress(ClientDisconnected):
                async for _ in self.stream():
                    pass
        if not self.body_read:
            reply.headers["Connection"] = "close"

    async def read(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.stream():
            data += chunk
            if limit and len(data) > limit:
                raise RegistryError("SIZE_INVALID", f"request body exceeds the {limit} byte limit", 413)
        return bytes(data)

    @property
    def base_url(self) -> str:
        host = self.headers.get("host", "localhost")
        return f"{self.scope.get('scheme', 'http')}://{host}"


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] = b""
    length: int | None = None


def json_reply(status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(value).encode()
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, body)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single 'bytes=' range as [start, end); None means the whole body."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise ValueError
            return max(size - length, 0), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        raise RegistryError("UNSUPPORTED", "malformed Range header", 416,
                            headers={"Content-Range": f"bytes */{size}"}) from None
    if start >= size or end <= start:
        raise RegistryError("UNSUPPORTED", "requested range not satisfiable", 416,
                            headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size)


def parse_content_range(header: str | None) -> tuple[int, int] | None:
    """Upload chunk ranges: 'start-end' (inclusive), optionally 'bytes start-end/total'."""
    if header is None:
        return None
    match = re.fullmatch(r"\s*(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?\s*", header)
    if not match:
        raise RegistryError("BLOB_UPLOAD_INVALID", "malformed Content-Range", 416)
    start, end = int(match[1]), int(match[2])
    if end < start:
        raise RegistryError("BLOB_UPLOAD_INVALID", "Content-Range end precedes its start", 416)
    return start, end - start + 1


def page(items: list[str], n: str | None, last: str | None) -> tuple[list[str], bool]:
    """Lexically ordered items after `last`, at most n of them, and whether more remain."""
    if last:
        import bisect
        items = items[bisect.bisect_right(items, last):]
    if n is None:
        return items, False
    if not n.isdigit():
        raise RegistryError("UNSUPPORTED", "n must be a non-negative integer", detail={"n": n[:50]})
    count = int(n)
    return items[:count], count > 0 and len(items) > count


def next_link(path: str, n: str, last: str) -> str:
    query = urllib.parse.urlencode({"n": n, "last": last})
    return f'<{path}?{query}>; rel="next"'


V2_ROUTES: list[tuple[str, re.Pattern, str]] = []


def v2_route(method: str, pattern: str) -> Callable:
    def register(handler: Callable) -> Callable:
        for verb in method.split():
            V2_ROUTES.append((verb, re.compile(pattern), handler.__name__))
        return handler
    return register


_NAME = r"(?P<name>.+?)"


class RegistryAPI:
    """/v2 handlers: each checks permission through authorize(), then calls the model."""

    def __init__(self, registry: Registry, authorizer: Authorizer, config: dict):
        self.registry = registry
        self.authorizer = authorizer
        self.config = config

    async def dispatch(self, request: HttpRequest) -> Reply:
        path = request.path
        matched_path = False
        for method, pattern, handler_name in V2_ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            matched_path = True
            if method == request.method or (method == "GET" and request.method == "HEAD"):
                params = match.groupdict()
                if "name" in params:
                    validate_name(params["name"])
                return await getattr(self, handler_name)(request, **params)
        if matched_path:
            raise RegistryError("UNSUPPORTED", f"method {request.method} not allowed here", 405)
        raise RegistryError("NAME_UNKNOWN" if path.startswith("/v2/") else "UNSUPPORTED",
                            "no such endpoint", 404, detail={"path": path[:300]})

    async def authorize(self, request: HttpRequest, repository: str | None, action: str) -> Identity:
        return await self.authorizer.authorize(request, repository, action)

    # -- base ----------------------------------------------------------------------

    @v2_route("GET", r"/v2/?")
    async def base(self, request: HttpRequest) -> Reply:
        await self.authorize(request, None, "login")
        return json_reply(200, {})

    @v2_route("GET", r"/v2/_catalog")
    async def catalog(self, request: HttpRequest) -> Reply:
        identity = await self.authorize(request, None, "catalog")
        n, last = request.arg("n"), request.arg("last")
        names = [name for name in self.registry.list_repositories()
                 if self.authorizer.may_pull(identity, name)]
        items, more = page(names, n, last)
        headers = {"Link": next_link("/v2/_catalog", n, items[-1])} if more else {}
        return json_reply(200, {"repositories": items}, headers)

    # -- blobs ---------------------------------------------------------------------

    @v2_route("GET", rf"/v2/{_NAME}/blobs/(?P<digest>[^/]+)")
    async def get_blob(self, request: HttpRequest, name: str, digest: str) -> Reply:
        await self.authorize(request, name, "pull")
        size = await self.registry.blob_size(name, digest)
        if size is None:
            raise RegistryError("BLOB_UNKNOWN", "blob unknown to registry", 404, detail={"digest": digest})
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes", "ETag": f'"{digest}"',
                   "Cache-Control": "max-age=31536000"}
        span = parse_range(request.headers.get("range"), size) if request.method == "GET" else None
        if request.method == "HEAD":
            return Reply(200, headers, b"", length=size)
        if span is None:
            return Reply(200, headers, self.registry.blob_chunks(digest, 0, size), length=size)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return Reply(206, headers, self.registry.blob_chunks(digest, start, end), length=end - start)

    @v2_route("DELETE", rf"/v2/{_NAME}/blobs/(?P<digest>[^/]+)")
    async def delete_blob(self, request: HttpRequest, name: str, digest: str) -> Reply:
        await self.authorize(request, name, "delete")
        await self.registry.unlink_blob(name, digest)
        return Reply(202, {"Docker-Content-Digest": digest})

    # -- uploads -------------------------------------------------------------------

    @v2_route("POST", rf"/v2/{_NAME}/blobs/uploads/?")
    async def start_upload(self, request: HttpRequest, name: str) -> Reply:
        identity = await self.authorize(request, name, "push")
        mount, source = request.arg("mount"), request.arg("from")
        if mount is not None:
            parse_digest(mount)
            if source and NAME_RE.fullmatch(source) and len(source) <= MAX_NAME_LENGTH \
                    and self.authorizer.may_act(identity, source, "pull") \
                    and await self.registry.mount_blob(name, source, mount):
                return self.blob_created(name, mount)
        digest = request.arg("digest")
        if digest is not None:
            parse_digest(digest)
            await self.registry.put_blob(name, digest, request.stream(), request.content_length())
            return self.blob_created(name, digest)
        algorithm = request.arg("digest-algorithm") or "sha256"
        upload = await self.registry.start_upload(name, algorithm)
        return Reply(202, {**self.registry.upload_headers(upload), "Content-Length": "0"})

    def blob_created(self, name: str, digest: str) -> Reply:
        return Reply(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    @v2_route("GET", rf"/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)")
    async def upload_status(self, request: HttpRequest, name: str, upload_id: str) -> Reply:
        await self.authorize(request, name, "push")
        upload = await self.registry.get_upload(name, upload_id)
        return Reply(204, self.registry.upload_headers(upload))

    @v2_route("PATCH", rf"/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)")
    async def patch_upload(self, request: HttpRequest, name: str, upload_id: str) -> Reply:
        await self.authorize(request, name, "push")
        upload = await self.registry.get_upload(name, upload_id)
        span = parse_content_range(request.headers.get("content-range"))
        async with upload.lock:
            start, length = span or (None, None)
            await self.registry.append_upload(upload, request.stream(), start, length)
        return Reply(202, self.registry.upload_headers(upload))

    @v2_route("PUT", rf"/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)")
    async def finish_upload(self, request: HttpRequest, name: str, upload_id: str) -> Reply:
        await self.authorize(request, name, "push")
        digest = request.arg("digest")
        if digest is None:
            raise RegistryError("DIGEST_INVALID", "the digest query parameter is required")
        parse_digest(digest)
        upload = await self.registry.get_upload(name, upload_id)
        span = parse_content_range(request.headers.get("content-range"))
        async with upload.lock:
            start, length = span or (None, None)
            if span or request.content_length() != 0:
                await self.registry.append_upload(upload, request.stream(), start, length)
            await self.registry.commit_upload(upload, digest)
        return self.blob_created(name, digest)

    @v2_route("DELETE", rf"/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)")
    async def cancel_upload(self, request: HttpRequest, name: str, upload_id: str) -> Reply:
        await self.authorize(request, name, "push")
        upload = await self.registry.get_upload(name, upload_id)
        await self.registry.cancel_upload(upload)
        return Reply(204)

    # -- manifests -----------------------------------------------------------------

    @v2_route("GET", rf"/v2/{_NAME}/manifests/(?P<reference>[^/]+)")
    async def get_manifest(self, request: HttpRequest, name: str, reference: str) -> Reply:
        await self.authorize(request, name, "pull")
        info = await self.registry.resolve(name, reference)
        headers = {"Content-Type": info.media_type, "Docker-Content-Digest": info.digest,
                   "ETag": f'"{info.digest}"'}
        if request.method == "HEAD":
            return Reply(200, headers, b"", length=info.size)
        return Reply(200, headers, await self.registry.manifest_content(info))

    @v2_route("PUT", rf"/v2/{_NAME}/manifests/(?P<reference>[^/]+)")
    async def put_manifest(self, request: HttpRequest, name: str, reference: str) -> Reply:
        await self.authorize(request, name, "push")
        tags = request.query.get("tag", [])
        if len(tags) > 100:
            raise RegistryError("UNSUPPORTED", "too many tags in one request", 414)
        body = await request.read(self.config["registry"]["max_manifest_size"])
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        result = await self.registry.put_manifest(name, reference, body, content_type, tags)
        reply = Reply(201, {"Location": f"/v2/{name}/manifests/{result.digest}",
                            "Docker-Content-Digest": result.digest})
        if result.subject:
            reply.headers["OCI-Subject"] = result.subject
        if is_digest(reference) and result.tags:
            reply.headers["OCI-Tag"] = ", ".join(result.tags)
        return reply

    @v2_route("DELETE", rf"/v2/{_NAME}/manifests/(?P<reference>[^/]+)")
    async def delete_manifest(self, request: HttpRequest, name: str, reference: str) -> Reply:
        await self.authorize(request, name, "delete")
        await self.registry.delete_manifest(name, reference)
        return Reply(202)

    # -- tags and referrers --------------------------------------------------------

    @v2_route("GET", rf"/v2/{_NAME}/tags/list")
    async def list_tags(self, request: HttpRequest, name: str) -> Reply:
        await self.authorize(request, name, "pull")
        n, last = request.arg("n"), request.arg("last")
        tags, more = page(await self.registry.list_tags(name), n, last)
        headers = {"Link": next_link(f"/v2/{name}/tags/list", n, tags[-1])} if more else {}
        return json_reply(200, {"name": name, "tags": tags}, headers)

    @v2_route("GET", rf"/v2/{_NAME}/referrers/(?P<digest>[^/]+)")
    async def list_referrers(self, request: HttpRequest, name: str, digest: str) -> Reply:
        await self.authorize(request, name, "pull")
        parse_digest(digest)
        artifact_type = request.arg("artifactType") or None
        descriptors = await self.registry.referrers(name, digest, artifact_type)
        headers = {"Content-Type": OCI_INDEX}
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        return Reply(200, headers, json.dumps(body).encode())


async def send_reply(send: Callable, reply: Reply, head_only: bool) -> int:
    """Send a Reply over ASGI; returns the number of body bytes sent."""
    body = reply.body
    length = reply.length if reply.length is not None else (len(body) if isinstance(body, bytes) else None)
    headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in reply.headers.items()]
    headers.append((API_VERSION_HEADER[0].encode(), API_VERSION_HEADER[1].encode()))
    if length is not None and reply.status not in (204, 304):
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    if head_only or isinstance(body, bytes):
        await send({"type": "http.response.body", "body": b"" if head_only else body})
        return 0 if head_only else len(body)
    sent = await send_streamed(send, body)
    await send({"type": "http.response.body", "body": b""})
    return sent


async def send_streamed(send: Callable, body: AsyncIterator[bytes]) -> int:
    """Send a streamed body, reading the next chunk while the current one is sent."""
    chunks_in, chunks_out = trio.open_memory_channel(0)

    async def read_ahead() -> None:
        async with chunks_in:
            try:
                async for chunk in body:
                    await chunks_in.send(chunk)
            finally:
                await body.aclose()

    sent = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_ahead)
        async with chunks_out:
            async for chunk in chunks_out:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
    return sent


class DistroFaceASGI:
    """The ASGI entry: /v2 goes to the lean registry router, the rest to Quart."""

    def __init__(self, api: RegistryAPI, web: Any, config: dict):
        self.api = api
        self.web = web
        self.config = config

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and (scope["path"] == "/v2" or scope["path"].startswith("/v2/")):
            await self.handle_v2(scope, receive, send)
        else:
            await self.web(scope, receive, send)

    async def handle_v2(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        request = HttpRequest(scope, receive)
        try:
            reply = await self.api.dispatch(request)
        except RegistryError as exc:
            reply = Reply(exc.status, {"Content-Type": "application/json", **exc.headers}, exc.body())
        except ClientDisconnected:
            self.log_access(request, 499, 0, started)
            return
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            error = RegistryError("UNKNOWN", "internal server error", 500)
            reply = Reply(500, {"Content-Type": "application/json"}, error.body())
        sent = 0
        await request.finish_body(reply)
        try:
            sent = await send_reply(send, reply, request.method == "HEAD")
        finally:
            self.log_access(request, reply.status, sent, started)

    def log_access(self, request: HttpRequest, status: int, sent: int, started: float) -> None:
        if self.config["server"]["access_log"]:
            write_access_log(request.scope, request.method, request.path, status, sent,
                             time.perf_counter() - started, request.user)


def write_access_log(scope: dict, method: str, path: str, status: int, sent: int,
                     seconds: float, user: str | None) -> None:
    client = (scope.get("client") or ("-", 0))[0]
    access_log.info('%s %s "%s %s" %d %d %.1fms', client, user or "-", method,
                    path, status, sent, seconds * 1000)


UI_DIR_NAME = "distroface_ui"


def ui_directory() -> Path | None:
    here = Path(__file__).resolve().parent / UI_DIR_NAME
    return here if here.is_dir() else None


def create_web_app(config: dict, registry: Registry, authorizer: Authorizer,
                   rbac_file: "RbacFile") -> Any:
    """The Quart app: health, the token service, /api/v1 and the web UI."""
    from quart import Response, request, send_file
    from quart_trio import QuartTrio

    ui_dir = ui_directory()
    app = QuartTrio(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=1 << 20, BODY_TIMEOUT=60, RESPONSE_TIMEOUT=None)

    def api_error(status: int, message: str, headers: dict | None = None) -> Any:
        return {"error": message}, status, headers or {}

    def client_address() -> str:
        return request.remote_addr or "-"

    async def request_identity() -> Identity:
        headers = {"authorization": request.headers.get("Authorization", "")}
        identity = await authorizer.identify(headers, client_address(), token_purpose="web")
        note_user(identity)
        return identity

    def require_covers(caller: Identity, permissions: Iterable[Permission]) -> None:
        """Nobody grants, or acts on an account holding, rights they lack themselves."""
        if authorizer.policy.is_admin(caller):
            return
        if not set(permissions) <= set(authorizer.policy.permissions(caller)):
            raise ApiError(403, "that involves permissions you do not hold")

    def account_permissions(name: str, groups: Iterable[str] | None = None) -> list[Permission]:
        identity = authorizer.users.identity(name) or Identity(name)
        if groups is not None:
            identity = Identity(name, tuple(groups))
        return authorizer.policy.permissions(identity)

    def require(identity: Identity, action: str, resource: str) -> None:
        if not authorizer.policy.allows(identity, action, resource):
            status = 401 if identity.anonymous else 403
            raise ApiError(status, f"{action}:{resource} permission required")

    @app.errorhandler(RegistryError)
    async def registry_error(exc: RegistryError) -> Any:
        return api_error(exc.status, exc.message, exc.headers)

    @app.errorhandler(ApiError)
    async def api_failure(exc: ApiError) -> Any:
        return api_error(exc.status, exc.message, exc.headers)

    @app.errorhandler(UserError)
    async def user_failure(exc: UserError) -> Any:
        return api_error(400, str(exc))

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok", "version": __version__}

    # -- Docker token service -------------------------------------------------------

    def requested_scopes(values: list[str]) -> list[Scope]:
        return [scope for value in values for text in value.split() if (scope := Scope.parse(text))]

    def check_service(service: str | None) -> None:
        if service and service != config["auth"]["service"]:
            raise ApiError(400, f"unknown service {service[:100]!r}")

    async def password_login(username: str, password: str) -> Identity:
        try:
            identity = await authorizer.login(username, password, client_address())
        except Throttled as exc:
            raise ApiError(429, "too many failed logins", {"Retry-After": str(exc.retry_after)}) from None
        if identity is None:
            raise ApiError(401, "invalid username or password")
        note_user(identity)
        return identity

    def note_user(identity: Identity) -> None:
        request.scope.setdefault("state", {})["user"] = identity.name

    def token_reply(identity: Identity, scopes: list[Scope], offline: bool) -> dict:
        access = authorizer.grant_scopes(identity, scopes)
        token, lifetime, issued = authorizer.tokens.issue(identity.name, access)
        body = {"token": token, "access_token": token, "expires_in": lifetime,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued)),
                "scope": " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)}
        if offline and not identity.anonymous:
            body["refresh_token"] = authorizer.tokens.issue_refresh(
                identity.name, authorizer.users.token_version(identity.name))
        return body

    @app.get("/auth/token")
    async def token_get() -> Any:
        check_service(request.args.get("service"))
        identity = ANONYMOUS
        if request.authorization and request.authorization.type == "basic":
            identity = await password_login(request.authorization.username or "",
                                            request.authorization.password or "")
        elif request.headers.get("Authorization"):
            raise ApiError(401, "only Basic credentials are accepted here")
        scopes = requested_scopes(request.args.getlist("scope"))
        offline = request.args.get("offline_token", "").lower() == "true"
        return token_reply(identity, scopes, offline)

    @app.post("/auth/token")
    async def token_post() -> Any:
        form = await request.form
        check_service(form.get("service"))
        if not form.get("client_id"):
            raise ApiError(400, "client_id is required")
        grant_type = form.get("grant_type")
        scopes = requested_scopes(form.getlist("scope"))
        if grant_type == "password":
            identity = await password_login(form.get("username", ""), form.get("password", ""))
            return token_reply(identity, scopes, form.get("access_type") == "offline")
        if grant_type == "refresh_token":
            identity = refresh_identity(form.get("refresh_token", ""))
            body = token_reply(identity, scopes, False)
            body["refresh_token"] = form["refresh_token"]
            return body
        raise ApiError(400, "grant_type must be password or refresh_token")

    def refresh_identity(token: str) -> Identity:
        try:
            claims = authorizer.tokens.verify(token, purpose="refresh")
        except TokenError as exc:
            raise ApiError(401, f"invalid refresh token: {exc}") from None
        identity = authorizer.users.identity(claims["sub"])
        if identity is None or claims.get("ver") != authorizer.users.token_version(claims["sub"]):
            raise ApiError(401, "refresh token revoked")
        note_user(identity)
        return identity

    # -- /api/v1/auth -------------------------------------------------------------------

    refresh_cookie = "distroface_refresh"

    def with_refresh_cookie(response: Any, identity: Identity) -> Any:
        token = authorizer.tokens.issue_refresh(identity.name, authorizer.users.token_version(identity.name))
        response.set_cookie(refresh_cookie, token, max_age=config["auth"]["refresh_token_lifetime"],
                            httponly=True, samesite="Strict", path="/api/v1/auth",
                            secure=request.scheme == "https")
        return response

    def session_body(identity: Identity) -> dict:
        token, lifetime, _ = authorizer.tokens.issue(identity.name, [], extra={"purpose": "web"})
        return {"access_token": token, "expires_in": lifetime, "user": user_view(identity.name)}

    def user_view(name: str) -> dict:
        record = authorizer.users.users.get(name, {})
        identity = authorizer.users.identity(name) or Identity(name)
        return {"username": name, "groups": record.get("groups", []), "created": record.get("created"),
                "default_password": bool(record.get("default_password")),
                "permissions": sorted({f"{p.action}:{p.resource}" + (f"@{','.join(p.globs)}" if p.globs else "")
                                       for p in authorizer.policy.permissions(identity)})}

    @app.post("/api/v1/auth/login")
    async def api_login() -> Any:
        body = await json_body()
        identity = await password_login(str(body.get("username", "")), str(body.get("password", "")))
        if not authorizer.policy.allows(identity, "LOGIN", "WEBUI"):
            raise ApiError(403, "this account may not sign in to the web UI (LOGIN:WEBUI)")
        return with_refresh_cookie(await app.make_response(session_body(identity)), identity)

    @app.post("/api/v1/auth/refresh")
    async def api_refresh() -> Any:
        identity = refresh_identity(request.cookies.get(refresh_cookie, ""))
        return await app.make_response(session_body(identity))

    @app.post("/api/v1/auth/logout")
    async def api_logout() -> Any:
        with contextlib.suppress(TokenError):
            claims = authorizer.tokens.verify(request.cookies.get(refresh_cookie, ""), "refresh")
            await trio.to_thread.run_sync(authorizer.tokens.revoke, claims)
        response = await app.make_response({"status": "logged out"})
        response.delete_cookie(refresh_cookie, path="/api/v1/auth")
        return response

    async def json_body() -> dict:
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        return body

    # -- /api/v1/users --------------------------------------------------------------------

    async def authenticated() -> Identity:
        identity = await request_identity()
        if identity.anonymous:
            raise ApiError(401, "login required")
        return identity

    @app.get("/api/v1/users/me")
    async def me() -> Any:
        return user_view((await authenticated()).name)

    @app.get("/api/v1/users")
    async def list_users() -> Any:
        require(await request_identity(), "VIEW", "USER")
        return [user_view(name) for name in sorted(authorizer.users.users)]

    @app.post("/api/v1/users")
    async def create_user() -> Any:
        identity = await request_identity()
        require(identity, "CREATE", "USER")
        body = await json_body()
        name = check_username(str(body.get("username", "")))
        groups = known_groups(body.get("groups", []))
        require_covers(identity, account_permissions(name, groups))
        check_password_policy(body.get("password"), config)
        hashed = await trio.to_thread.run_sync(hash_password, body["password"], config["auth"]["bcrypt_rounds"])
        await authorizer.users.change(lambda users: add_user(users, name, hashed, groups))
        return user_view(name), 201

    def known_groups(groups: Any) -> list[str]:
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ApiError(400, "groups must be a list of group names")
        unknown = [g for g in groups if g not in config["groups"]]
        if unknown:
            raise ApiError(400, f"unknown groups: {', '.join(unknown)}")
        return groups

    @app.put("/api/v1/users/groups")
    async def update_groups() -> Any:
        identity = await request_identity()
        require(identity, "UPDATE", "USER")
        body = await json_body()
        name, groups = str(body.get("username", "")), known_groups(body.get("groups"))
        require_covers(identity, account_permissions(name) + account_permissions(name, groups))
        if name == identity.name and not authorizer.policy.is_admin(Identity(name, tuple(groups))) \
                and authorizer.policy.is_admin(identity):
            raise ApiError(400, "you cannot remove your own last administrator group")
        await authorizer.users.change(lambda users: set_groups(users, name, groups))
        return user_view(name)

    @app.delete("/api/v1/users/<name>")
    async def remove_user(name: str) -> Any:
        identity = await request_identity()
        require(identity, "DELETE", "USER")
        if name == identity.name:
            raise ApiError(400, "you cannot delete yourself")
        require_covers(identity, account_permissions(name))
        await authorizer.users.change(lambda users: delete_user(users, name))
        return {"deleted": name}

    @app.put("/api/v1/users/<name>/password")
    async def change_password(name: str) -> Any:
        identity = await authenticated()
        body = await json_body()
        if name == "me":
            name = identity.name
        if name == identity.name:
            if await authorizer.users.verify(name, str(body.get("current_password", ""))) is None:
                raise ApiError(403, "current password is wrong")
        else:
            require(identity, "UPDATE", "USER")
            require_covers(identity, account_permissions(name))
        check_password_policy(body.get("new_password"), config)
        hashed = await trio.to_thread.run_sync(hash_password, body["new_password"], config["auth"]["bcrypt_rounds"])
        await authorizer.users.change(lambda users: set_password(users, name, hashed))
        return {"updated": name}

    # -- /api/v1/roles and /api/v1/groups ----------------------------------------------------

    async def rbac_listing(table: str, name: str | None = None) -> Any:
        require(await request_identity(), "VIEW", "GROUP")
        if name is None:
            return config[table]
        if name not in config[table]:
            raise ApiError(404, f"no such {table[:-1]} {name}")
        return config[table][name]

    for table in ("roles", "groups"):
        app.add_url_rule(f"/api/v1/{table}", f"list_{table}", functools.partial(rbac_listing, table))
        app.add_url_rule(f"/api/v1/{table}/<name>", f"get_{table}", functools.partial(rbac_listing, table))

    async def edit_rbac(table: str, name: str, value: dict | None) -> Any:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
            raise ApiError(400, "names are 1-64 characters of a-z, 0-9, '_' and '-'")
        try:
            await trio.to_thread.run_sync(rbac_file.update, table, name, value)
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        authorizer.reload_policy()
        return config[table].get(name, {"deleted": name})

    @app.put("/api/v1/roles/<name>")
    async def put_role(name: str) -> Any:
        require(await request_identity(), "ADMIN", "SYSTEM")
        body = await json_body()
        return await edit_rbac("roles", name, {k: body[k] for k in ("description", "permissions") if k in body})

    @app.delete("/api/v1/roles/<name>")
    async def delete_role(name: str) -> Any:
        require(await request_identity(), "ADMIN", "SYSTEM")
        return await edit_rbac("roles", name, None)

    def group_permissions(roles: Any) -> list[Permission]:
        if not isinstance(roles, list):
            return []
        return [p for role in roles for p in authorizer.policy.roles.get(role, [])]

    @app.put("/api/v1/groups/<name>")
    async def put_group(name: str) -> Any:
        identity = await request_identity()
        require(identity, "UPDATE", "GROUP")
        body = await json_body()
        require_covers(identity, group_permissions(body.get("roles"))
                       + group_permissions(config["groups"].get(name, {}).get("roles")))
        return await edit_rbac("groups", name, {k: body[k] for k in ("description", "roles") if k in body})

    @app.delete("/api/v1/groups/<name>")
    async def delete_group(name: str) -> Any:
        identity = await request_identity()
        require(identity, "DELETE", "GROUP")
        require_covers(identity, group_permissions(config["groups"].get(name, {}).get("roles")))
        return await edit_rbac("groups", name, None)

    # -- web UI -------------------------------------------------------------------------------

    @app.get("/")
    @app.get("/<path:path>")
    async def ui(path: str = "index.html") -> Any:
        if path.startswith(("api/", "auth/")):
            raise ApiError(404, "no such endpoint")
        if ui_dir is None:
            return Response("DistroFace registry", mimetype="text/plain")
        target = (ui_dir / path).resolve()
        if not target.is_relative_to(ui_dir.resolve()) or not target.is_file():
            target = ui_dir / "index.html"
        return await send_file(target)

    @app.before_request
    async def start_clock_and_read_body() -> None:
        """Bodies here are small; reading each whole before its handler runs
        keeps a refused request from leaving its body on the connection."""
        request.scope.setdefault("state", {})["started"] = time.perf_counter()
        await request.get_data()

    @app.after_request
    async def log_request(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith(("/api/", "/auth/")):
            response.headers["Cache-Control"] = "no-store"
        if config["server"]["access_log"]:
            state = request.scope.get("state", {})
            write_access_log(request.scope, request.method, request.path, response.status_code,
                             response.content_length or 0, time.perf_counter() - state.get("started", time.perf_counter()),
                             state.get("user"))
        return response

    return app


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class RbacFile:
    """Roles and groups edited through the API are written back to the TOML
    file with tomli-w, keeping the previous file as <file>.bak."""

    def __init__(self, live: LiveConfig):
        self.live = live
        self.config = live.values

    @property
    def path(self) -> Path:
        return self.live.path

    def update(self, table: str, name: str, value: dict | None) -> None:
        import shutil
        import tomli_w
        try:
            raw = tomllib.loads(self.path.read_text()) if self.path.exists() else {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path} does not parse ({exc}); fix the file first") from None
        entries = raw.setdefault(table, {})
        if value is None:
            if name not in self.config[table]:
                raise ConfigError(f"no such {table[:-1]} {name}")
            if name in DEFAULT_ROLES or name in DEFAULT_GROUPS:
                entries[name] = {"roles": []} if table == "groups" else {"permissions": []}
            else:
                entries.pop(name, None)
        else:
            entries[name] = {**entries.get(name, {}), **value}
        text = tomli_w.dumps(raw)
        merged = merge_config(DEFAULT_CONFIG, tomllib.loads(text))
        validate_rbac_tables(merge_rbac_defaults(merged["roles"], DEFAULT_ROLES),
                             merge_rbac_defaults(merged["groups"], DEFAULT_GROUPS))
        if self.path.exists():
            shutil.copy2(self.path, self.path.with_name(self.path.name + ".bak"))
        write_private(self.path, text.encode())
        self.live.reload()


# ============================================================================
# Background services
# ============================================================================

async def upload_janitor(registry: Registry) -> None:
    while True:
        settings = registry.settings
        try:
            removed = await registry.purge_stale_uploads(settings["upload_max_age"])
            if removed:
                log.info("purged %d stale uploads", removed)
        except OSError as exc:
            log.warning("upload janitor: %s", exc)
        await trio.sleep(max(settings["upload_purge_interval"], 1))


async def watch_files(live: LiveConfig, authorizer: Authorizer, interval: float = 1.0) -> None:
    """Pick up edits to the configuration and to users.json made outside the server."""
    while True:
        await trio.sleep(interval)
        if await trio.to_thread.run_sync(live.reload_if_changed):
            authorizer.reload_policy()
        if await trio.to_thread.run_sync(authorizer.users.load):
            authorizer.basic_cache.clear()


# ============================================================================
# Assembly and command line
# ============================================================================

class DataDirLock:
    """One process per data directory."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = self.path.read_text().strip() or "another process"
                raise SystemExit(f"distroface: data directory {self.path.parent} is in use by "
                                 f"{holder} (lock file {self.path}); refusing to start") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclasses.dataclass
class App:
    live: LiveConfig
    store: FileStore
    registry: Registry
    authorizer: Authorizer
    asgi: DistroFaceASGI

    @property
    def config(self) -> dict:
        return self.live.values


def create_app(live: LiveConfig) -> App:
    config = live.values
    data_dir = Path(config["server"]["data_dir"])
    store = FileStore(data_dir)
    registry = Registry(store, config)
    authorizer = Authorizer(config, data_dir)
    api = RegistryAPI(registry, authorizer, config)
    web = create_web_app(config, registry, authorizer, RbacFile(live))
    return App(live, store, registry, authorizer, DistroFaceASGI(api, web, config))


def hypercorn_config(config: dict) -> Any:
    import hypercorn.trio.tcp_server
    from hypercorn.config import Config as HyperConfig
    # Hypercorn reads sockets 64 KiB at a time; blob uploads spend most of
    # their time per read, so larger reads push layers markedly faster.
    hypercorn.trio.tcp_server.MAX_RECV = 256 * 1024
    hyper = HyperConfig()
    hyper.bind = [config["server"]["listen"]]
    hyper.accesslog = None
    hyper.errorlog = log
    hyper.graceful_timeout = config["server"]["shutdown_grace"]
    hyper.keep_alive_max_requests = 1 << 30
    hyper.keep_alive_timeout = 75
    hyper.h11_max_incomplete_size = 64 * 1024
    if config["server"]["tls_cert"]:
        hyper.certfile = config["server"]["tls_cert"]
        hyper.keyfile = config["server"]["tls_key"]
    return hyper


async def wait_for_shutdown_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def serve(app: App) -> None:
    from hypercorn.trio import serve as hypercorn_serve
    await app.registry.open()
    await trio.to_thread.run_sync(app.authorizer.open)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(upload_janitor, app.registry)
        nursery.start_soon(watch_files, app.live, app.authorizer)
        await hypercorn_serve(app.asgi, hypercorn_config(app.config),
                              shutdown_trigger=wait_for_shutdown_signal)
        nursery.cancel_scope.cancel()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cli_overrides(args: argparse.Namespace) -> dict:
    server = {}
    if getattr(args, "listen", None):
        server["listen"] = args.listen
    if getattr(args, "data", None):
        server["data_dir"] = args.data
    return {"server": server} if server else {}


def live_config(args: argparse.Namespace) -> LiveConfig:
    path = getattr(args, "config", None) or os.environ.get("DISTROFACE_CONFIG")
    try:
        return LiveConfig(Path(path) if path else None, cli_overrides(args))
    except ConfigError as exc:
        raise SystemExit(f"distroface: invalid configuration: {exc}") from None


def command_serve(args: argparse.Namespace) -> int:
    live = live_config(args)
    data_dir = Path(live.values["server"]["data_dir"])
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        app = create_app(live)
        log.info("DistroFace %s serving on %s with data in %s (configuration %s)", __version__,
                 live.values["server"]["listen"], data_dir.resolve(), live.path)
        trio.run(serve, app)
    finally:
        lock.release()
    return 0


def read_new_password(args: argparse.Namespace, config: dict) -> str:
    import getpass
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("New password: ")
        if password != getpass.getpass("Repeat it: "):
            raise UserError("the passwords differ")
    check_password_policy(password, config)
    return password


def command_user(args: argparse.Namespace) -> int:
    """Edit users.json directly; a running server picks the change up."""
    config = live_config(args).values
    users = UserFile(Path(config["server"]["data_dir"]))
    rounds = config["auth"]["bcrypt_rounds"]
    groups = [g for g in (getattr(args, "groups", None) or "").split(",") if g]
    unknown = [g for g in groups if g not in config["groups"]]
    try:
        if unknown:
            raise UserError(f"unknown groups: {', '.join(unknown)}")
        if args.action == "list":
            for name, record in sorted(users.read().items()):
                print(f"{name}\t{','.join(record.get('groups', []))}")
        elif args.action == "add":
            check_username(args.name)
            hashed = hash_password(read_new_password(args, config), rounds)
            users.modify(lambda u: add_user(u, args.name, hashed, groups))
        elif args.action == "passwd":
            hashed = hash_password(read_new_password(args, config), rounds)
            users.modify(lambda u: set_password(u, args.name, hashed))
        elif args.action == "del":
            users.modify(lambda u: delete_user(u, args.name))
        elif args.action == "groups":
            users.modify(lambda u: set_groups(u, args.name, groups))
    except UserError as exc:
        print(f"distroface: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distroface", description="DistroFace container registry")
    parser.add_argument("--version", action="version", version=f"DistroFace {__version__}")
    commands = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser, default: Any = None) -> None:
        p.add_argument("--listen", default=default, help="HOST:PORT to serve on (default 0.0.0.0:8668)")
        p.add_argument("--data", default=default, help="data directory (default ./data)")
        p.add_argument("--config", default=default, help="configuration file (TOML)")

    common(parser)
    serve_parser = commands.add_parser("serve", help="run the registry (the default)")
    common(serve_parser, argparse.SUPPRESS)
    serve_parser.set_defaults(func=command_serve)

    user_parser = commands.add_parser("user", help="manage users (works while the server runs)")
    common(user_parser, argparse.SUPPRESS)
    user_actions = user_parser.add_subparsers(dest="action", required=True)
    common(user_actions.add_parser("list", help="list users and their groups"), argparse.SUPPRESS)
    for action, text in (("add", "add a user"), ("passwd", "set a user's password"),
                         ("del", "delete a user"), ("groups", "set a user's groups")):
        sub = user_actions.add_parser(action, help=text)
        common(sub, argparse.SUPPRESS)
        sub.add_argument("name")
        if action in ("add", "groups"):
            sub.add_argument("--groups", "-g", default="", help="comma-separated group names")
        if action in ("add", "passwd"):
            sub.add_argument("--password-stdin", action="store_true",
                             help="read the password from standard input")
    user_parser.set_defaults(func=command_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", command_serve)
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
