#!/usr/bin/env python3
"""Writes an OCI archive (a tar of an OCI image layout) of a one-layer busybox image for the gateway VM.

usage: scenario-image.py BUSYBOX_BINARY GOARCH REFERENCE OUT.tar

BUSYBOX_BINARY is a static busybox for GOARCH (amd64 or arm64: Debian's busybox-static of that architecture,
unpacked with dpkg-deb). The layout is the one `edged demo` writes (Sources/EdgedDaemon/DemoImage.swift), for
any architecture, so `edgectl images import` in the VM takes it like the demo image.
"""
import hashlib
import os
import io
import json
import sys
import tarfile

APPLETS = ["sh", "echo", "sleep", "date", "cat", "ls", "hostname", "id", "ps", "env", "true", "false", "grep",
           "head", "tail", "dd", "tr", "seq", "yes", "mkdir", "rm", "touch", "wc", "kill", "top"]


def add(tar, name, data=None, mode=0o644, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.type = kind
    info.linkname = link
    info.mtime = 0
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for e in entries:
            add(tar, *e[:1], **e[1])
    return buf.getvalue()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    busybox, goarch, ref, out = sys.argv[1:]
    with open(busybox, "rb") as f:
        binary = f.read()
    entries = []
    for d in ["bin", "etc", "tmp", "root"]:
        entries.append((d + "/", dict(mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)))
    entries.append(("bin/busybox", dict(data=binary, mode=0o755)))
    for a in APPLETS:
        entries.append(("bin/" + a, dict(kind=tarfile.SYMTYPE, link="busybox", mode=0o777)))
    entries.append(("etc/passwd", dict(data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")))
    entries.append(("etc/group", dict(data=b"root:x:0:\nnogroup:x:65534:\n")))
    layer = tar_bytes(entries)
    config = json.dumps({"architecture": goarch, "os": "linux",
                         "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
                         "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
                         "history": [{"created_by": "cross/vm/scenario-image.py"}]}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": digest(layer), "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": digest(manifest), "size": len(manifest),
                                       "annotations": {"org.opencontainers.image.ref.name": ref},
                                       "platform": {"architecture": goarch, "os": "linux"}}]}).encode()
    archive = [("oci-layout", dict(data=b'{"imageLayoutVersion":"1.0.0"}')),
               ("index.json", dict(data=index)),
               ("blobs/", dict(kind=tarfile.DIRTYPE, mode=0o755)),
               ("blobs/sha256/", dict(kind=tarfile.DIRTYPE, mode=0o755))]
    for blob in (layer, config, manifest):
        archive.append(("blobs/sha256/" + hashlib.sha256(blob).hexdigest(), dict(data=blob)))
    with open(out + ".tmp", "wb") as f:
        f.write(tar_bytes(archive))
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main()
