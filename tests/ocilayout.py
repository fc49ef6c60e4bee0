"""Write small, reproducible OCI image layouts, and push them over plain HTTP."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class Image:
    """An image (or an image index, with `children`) written into an OCI layout."""

    layout: Path
    tag: str | None
    media_type: str
    manifest_digest: str
    manifest: bytes
    config_digest: str | None = None
    layer_digests: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    children: list[Image] = field(default_factory=list)

    @property
    def blob_digests(self) -> list[str]:
        return [self.config_digest, *self.layer_digests] if self.config_digest else []

    def blob(self, digest: str) -> bytes:
        return blob_path(self.layout, digest).read_bytes()

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.manifest_digest,
                "size": len(self.manifest)}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":", 1)
    return Path(layout) / "blobs" / alg / hexpart


def put_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    path = blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def put_json(layout: Path, obj: dict) -> tuple[str, bytes]:
    data = json.dumps(obj, indent=2).encode()
    return put_blob(layout, data), data


def layer_tar(name: str, content: bytes) -> bytes:
    """A real tar archive holding one regular file, with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _init_layout(layout: Path) -> None:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if not (layout / "index.json").exists():
        (layout / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))


def _tag(layout: Path, image: Image, tag: str) -> None:
    index_file = layout / "index.json"
    index = json.loads(index_file.read_text())
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get(REF_NAME) != tag]
    index["manifests"].append({**image.descriptor(), "annotations": {REF_NAME: tag}})
    index_file.write_text(json.dumps(index, indent=2))
    image.tag = tag


def _platform(platform: tuple) -> dict:
    keys = ("os", "architecture", "variant")
    return dict(zip(keys, platform))


def _build_image(layout: Path, layer_sizes, seed, platform, compress) -> Image:
    layers, diff_ids, sizes = [], [], {}
    for i, size in enumerate(layer_sizes):
        rng = random.Random(f"{seed}:{i}:{size}")
        tar = layer_tar(f"data/layer-{i}.bin", rng.randbytes(size))
        blob = gzip.compress(tar, compresslevel=1, mtime=0) if compress else tar
        digest = put_blob(layout, blob)
        diff_ids.append(sha256(tar))
        layers.append({"mediaType": OCI_LAYER_GZIP if compress else OCI_LAYER,
                       "digest": digest, "size": len(blob)})
        sizes[digest] = len(blob)
    config = {
        "created": "1970-01-01T00:00:00Z",
        **_platform(platform),
        "config": {"Cmd": ["/bin/sh"], "Env": [f"DISTROFACE_TEST_SEED={seed}"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(len(layers))],
    }
    config_digest, config_bytes = put_json(layout, config)
    sizes[config_digest] = len(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": layers,
    }
    digest, data = put_json(layout, manifest)
    return Image(Path(layout), None, OCI_MANIFEST, digest, data, config_digest,
                 [layer["digest"] for layer in layers], sizes)


def write_image(layout_dir, tag: str = "latest", layer_sizes=(1024,), seed: int | str = 0,
                platform: tuple = ("linux", "amd64"), compress: bool = True) -> Image:
    """Write (or add to) an OCI layout one image of random layers, tagged `tag`."""
    layout = Path(layout_dir)
    _init_layout(layout)
    image = _build_image(layout, layer_sizes, seed, platform, compress)
    _tag(layout, image, tag)
    return image


def write_multiplatform(layout_dir, tag: str = "latest",
                        platforms=(("linux", "amd64"), ("linux", "arm64")),
                        layer_sizes=(1024,), seed: int | str = 0,
                        compress: bool = True) -> Image:
    """Write an image index over one image per platform, tagged `tag`."""
    layout = Path(layout_dir)
    _init_layout(layout)
    children = [_build_image(layout, layer_sizes, f"{seed}/{'/'.join(p)}", p, compress)
                for p in platforms]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**child.descriptor(), "platform": _platform(p)}
                      for child, p in zip(children, platforms)],
    }
    digest, data = put_json(layout, index)
    image = Image(layout, None, OCI_INDEX, digest, data, children=children)
    _tag(layout, image, tag)
    return image


def push_image_http(base_url: str, repo: str, tag: str | None, image: Image,
                    session: requests.Session | None = None) -> str:
    """Push blobs (POST + monolithic PUT) and manifest(s); return the manifest digest.

    An index pushes its children first, by digest. With tag=None the manifest
    is pushed by digest only.
    """
    http = session or requests.Session()
    for child in image.children:
        push_image_http(base_url, repo, None, child, http)
    for digest in image.blob_digests:
        r = http.post(f"{base_url}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, (r.status_code, r.text)
        location = urljoin(base_url + "/", r.headers["Location"])
        r = http.put(location, params={"digest": digest}, data=image.blob(digest),
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.status_code, r.text)
    ref = tag or image.manifest_digest
    r = http.put(f"{base_url}/v2/{repo}/manifests/{ref}", data=image.manifest,
                 headers={"Content-Type": image.media_type})
    assert r.status_code == 201, (r.status_code, r.text)
    return image.manifest_digest
