#!/usr/bin/env python3
"""The image corpus of issue 20: one small image per format or layer quirk, built here by hand
(tarballs written with Python's tarfile and GNU tar, compressed with gzip or zstd, manifests
and indexes written as JSON) and pushed to a registry over its HTTP API (plain HTTP, loopback).

    python3 hack/images/corpus.py REGISTRY CHECKER OUT

REGISTRY is host:port (a docker-registry on loopback, hack/registry.sh); CHECKER the static
checker binary (hack/images/checker.c) put as /checker in every image's base layer; OUT a file
that gets one line per corpus case, tab-separated:

    NAME  REFERENCE  EXPECT  RUN  MASK  WANT  NOTE

EXPECT is "ok" (pulls and runs on both runtimes, rootfs manifests compared), "pull-fail:TEXT"
(husk-cri must refuse the pull with TEXT in the error) or "create-fail:TEXT" (the pull works,
CreateContainer must fail with TEXT). RUN says how the container is started: "cmd" (CRI command
/checker plus the volume paths to list), "image" (no command: the image's Entrypoint and Cmd),
"args" (CRI args only: the image's Entrypoint with the request's args). MASK names a known,
explained difference hidden from the diff ("groups": containerd 1.6 gives no supplementary
groups of the image's USER, see hack/image-corpus.sh), "known-gap" (husk-cri differs from
containerd and should not: reported as GAP, and as a failure once it no longer differs, so the
mark is removed) or is "-". WANT lists, separated by "|",
lines (or parts of lines) husk-cri's manifest must have whatever containerd does, "!TEXT" one it
must not have ("-": none).
NOTE says what the case is about.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_MT = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "plain"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "plain"): "application/vnd.docker.image.rootfs.diff.tar",
    ("docker-foreign", "gzip"): "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ("oci-nondist", "gzip"): "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
MTIME = 1_600_000_000
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Registry:
    def __init__(self, host):
        self.base = f"http://{host}/v2"

    def _req(self, method, url, data=None, headers=None):
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, _ = self._req("HEAD", f"{self.base}/{repo}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self._req("POST", f"{self.base}/{repo}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"start upload to {repo}: {status} {body[:200]!r}")
        loc = headers.get("Location") or headers.get("location")
        if loc.startswith("/"):
            loc = self.base[: -len("/v2")] + loc
        sep = "&" if "?" in loc else "?"
        status, _, body = self._req(
            "PUT", f"{loc}{sep}digest={digest}", data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if status != 201:
            raise RuntimeError(f"upload {digest} to {repo}: {status} {body[:200]!r}")
        return digest

    def manifest(self, repo, ref, media_type, data):
        status, _, body = self._req(
            "PUT", f"{self.base}/{repo}/manifests/{ref}", data, {"Content-Type": media_type})
        if status != 201:
            raise RuntimeError(f"push manifest {repo}:{ref}: {status} {body[:300]!r}")
        return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    """A tarball written entry by entry with tarfile (PAX format: long names, xattrs, times)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT,
                                encoding="utf-8")

    def add(self, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, link="",
            mtime=MTIME, xattrs=None, dev=(0, 0), pax=None):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.mtime = mtime
        ti.linkname = link
        ti.devmajor, ti.devminor = dev
        ti.size = len(data) if kind == tarfile.REGTYPE else 0
        headers = dict(pax or {})
        for k, v in (xattrs or {}).items():
            headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
        ti.pax_headers = headers
        self.tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        return self

    def dir(self, name, mode=0o755, **kw):
        return self.add(name, tarfile.DIRTYPE, mode=mode, **kw)

    def file(self, name, data, mode=0o644, **kw):
        return self.add(name, tarfile.REGTYPE, data=data, mode=mode, **kw)

    def symlink(self, name, target, **kw):
        return self.add(name, tarfile.SYMTYPE, link=target, mode=0o777, **kw)

    def hardlink(self, name, target, **kw):
        return self.add(name, tarfile.LNKTYPE, link=target, **kw)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


_compressed = {}


def compress(data, how):
    """gzip (no timestamp), zstd or nothing; the same bytes compressed once (the base layer)."""
    key = (hashlib.sha256(data).digest(), how)
    if key not in _compressed:
        _compressed[key] = _compress(data, how)
    return _compressed[key]


def _compress(data, how):
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True,
                              stdout=subprocess.PIPE).stdout
    return data


def base_layer(checker):
    """busybox-static (sh and a few applets), the checker, users and groups."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    with open(checker, "rb") as f:
        check = f.read()
    l = Layer()
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home", "home/app"):
        mode = 0o1777 if d == "tmp" else 0o700 if d == "root" else 0o755
        uid = 1000 if d == "home/app" else 0
        l.dir(d + "/", mode=mode, uid=uid, gid=uid)
    l.file("bin/busybox", busybox, mode=0o755)
    for applet in ("sh", "ls", "cat", "sleep", "id", "true"):
        l.symlink("bin/" + applet, "busybox")
    l.file("checker", check, mode=0o755)
    l.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
           b"app:x:1000:1000:app:/home/app:/bin/sh\n"
           b"svc:x:1001:50:svc:/:/bin/sh\n"
           b"nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
    l.file("etc/group", b"root:x:0:\nstaff:x:50:app\napp:x:1000:\nextra:x:2000:app,svc\n"
           b"nogroup:x:65534:\n")
    return l.bytes()


class Builder:
    def __init__(self, registry, checker, out):
        self.reg = Registry(registry)
        self.host = registry
        self.base = base_layer(checker)
        self.out = out
        self.lines = []

    def config(self, diff_ids, cfg=None, arch="amd64"):
        c = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"]}
        c.update(cfg or {})
        return {
            "architecture": arch, "os": "linux",
            "created": "2020-09-13T12:26:40Z",
            "config": c,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "hack/images/corpus.py"} for _ in diff_ids],
        }

    def image(self, repo, layers, cfg=None, kind="oci", comp="gzip", tag="latest",
              arch="amd64", layer_extra=None, push_tag=True):
        """Pushes one image manifest; `layers` are uncompressed tarballs on top of the base
        layer. Returns (digest, size) of the manifest."""
        tars = [self.base] + list(layers)
        descs, diff_ids = [], []
        for i, t in enumerate(tars):
            how = comp if isinstance(comp, str) else comp[i]
            blob = compress(t, how)
            digest = self.reg.blob(repo, blob)
            lk = kind
            if layer_extra and i in layer_extra and "kind" in layer_extra[i]:
                lk = layer_extra[i]["kind"]
            d = {"mediaType": LAYER_MT[(lk, how)], "digest": digest, "size": len(blob)}
            if layer_extra and i in layer_extra and "urls" in layer_extra[i]:
                d["urls"] = layer_extra[i]["urls"]
            descs.append(d)
            diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
        cfg_bytes = json.dumps(self.config(diff_ids, cfg, arch), sort_keys=True).encode()
        cfg_digest = self.reg.blob(repo, cfg_bytes)
        mt = OCI_MANIFEST if kind == "oci" else DOCKER_MANIFEST
        m = {
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": OCI_CONFIG if kind == "oci" else DOCKER_CONFIG,
                       "digest": cfg_digest, "size": len(cfg_bytes)},
            "layers": descs,
        }
        body = json.dumps(m, indent=2).encode()
        ref = tag if push_tag else "sha256:" + hashlib.sha256(body).hexdigest()
        digest = self.reg.manifest(repo, ref, mt, body)
        return digest, len(body), mt

    def index(self, repo, entries, kind="oci", tag="latest"):
        mt = OCI_INDEX if kind == "oci" else DOCKER_LIST
        ms = []
        for (digest, size, emt), platform, annotations in entries:
            d = {"mediaType": emt, "digest": digest, "size": size, "platform": platform}
            if annotations:
                d["annotations"] = annotations
            ms.append(d)
        body = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": ms},
                          indent=2).encode()
        return self.reg.manifest(repo, tag, mt, body)

    def case(self, name, ref, expect="ok", run="cmd", note="", mask="-", want=()):
        self.lines.append("\t".join([name, ref, expect, run, mask, "|".join(want) or "-",
                                     note]))

    def ref(self, repo, tag="latest"):
        return f"{self.host}/{repo}:{tag}"

    def write(self):
        with open(self.out, "w") as f:
            f.write("\n".join(self.lines) + "\n")


def gnu_tar_sparse(fmt):
    """A layer with a sparse file (1 MiB hole, data at both ends), written by GNU tar."""
    tmp = tempfile.mkdtemp(prefix="husk-corpus-sparse.")
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "sparse"))
        p = os.path.join(root, "sparse", "file")
        with open(p, "wb") as f:
            f.write(b"head")
            f.seek(1 << 20)
            f.write(b"middle")
            f.seek(3 << 20)
            f.write(b"tail")
        os.utime(p, (MTIME, MTIME))
        os.utime(os.path.join(root, "sparse"), (MTIME, MTIME))
        out = os.path.join(tmp, "layer.tar")
        subprocess.run(["tar", "--sparse", f"--format={fmt}", "--numeric-owner",
                        "--owner=0", "--group=0", "-C", root, "-cf", out, "sparse"], check=True)
        with open(out, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(tmp)


def build(b):
    # ---- item 1: manifests and platform selection ------------------------------------------
    for comp in ("gzip", "zstd", "plain"):
        repo = f"corpus/oci-{comp}"
        b.image(repo, [Layer().file("hello", b"hello " + comp.encode()).bytes()], comp=comp)
        b.case(f"oci-{comp}", b.ref(repo), note=f"OCI manifest, {comp} layers")
    repo = "corpus/docker-schema2"
    b.image(repo, [Layer().file("hello", b"docker").bytes()], kind="docker")
    b.case("docker-schema2", b.ref(repo), note="Docker schema 2 manifest, docker layer types")
    repo = "corpus/docker-plain"
    b.image(repo, [Layer().file("hello", b"docker plain").bytes()], kind="docker", comp="plain")
    b.case("docker-plain", b.ref(repo), note="Docker schema 2, uncompressed docker layers")
    mixed = "corpus/mixed-compression"
    b.image(mixed, [Layer().file("z", b"zstd").bytes(), Layer().file("p", b"plain").bytes()],
            comp=["gzip", "zstd", "plain"])
    b.case("mixed-compression", b.ref(mixed), note="gzip, zstd and plain layers in one image")

    # an index: arm64/v8, amd64 (v3 and plain), s390x and a buildkit attestation manifest
    repo = "corpus/oci-index"
    per = {}
    for arch, variant in (("arm64", "v8"), ("amd64", "v3"), ("amd64", None), ("s390x", None)):
        key = arch + (variant or "")
        per[key] = b.image(repo, [Layer().file("arch", key.encode()).bytes()], arch=arch,
                           push_tag=False)
    att = b.image(repo, [Layer().file("attestation", b"in-toto").bytes()], arch="unknown",
                  push_tag=False)

    def plat(arch, variant=None, os_="linux"):
        p = {"architecture": arch, "os": os_}
        if variant:
            p["variant"] = variant
        return p

    entries = [(per["arm64v8"], plat("arm64", "v8"), None),
               (att, plat("unknown", None, "unknown"),
                {"vnd.docker.reference.type": "attestation-manifest",
                 "vnd.docker.reference.digest": per["amd64"][0]}),
               (per["amd64"], plat("amd64"), None),
               (per["s390x"], plat("s390x"), None)]
    idx = b.index(repo, entries)
    b.case("oci-index", b.ref(repo), note="OCI index: picks linux/amd64 among arm64, s390x and "
           "an attestation")
    b.case("oci-index-by-digest", f"{b.host}/{repo}@{idx}", note="the same index by digest")
    b.case("manifest-by-digest", f"{b.host}/{repo}@{per['amd64'][0]}",
           note="a platform manifest by digest (no tag)")
    # an amd64/v3-only entry next to the baseline: the baseline wins (v3 may need AVX2)
    # (an index can only name manifests of its own repository: other tags of oci-index)
    b.index(repo, [(per["amd64v3"], plat("amd64", "v3"), None),
                   (per["amd64"], plat("amd64"), None)], tag="variant")
    b.case("oci-index-variant", b.ref(repo, "variant"), note="index with amd64/v3 and amd64: the "
           "baseline is taken")
    repo = "corpus/docker-list"
    dl = {}
    for arch in ("arm64", "amd64"):
        dl[arch] = b.image(repo, [Layer().file("arch", arch.encode()).bytes()], arch=arch,
                           kind="docker", push_tag=False)
    b.index(repo, [(dl["arm64"], plat("arm64", "v8"), None), (dl["amd64"], plat("amd64"), None)],
            kind="docker")
    b.case("docker-list", b.ref(repo), note="Docker manifest list")
    repo = "corpus/oci-index"
    b.index(repo, [(per["arm64v8"], plat("arm64", "v8"), None),
                   (per["s390x"], plat("s390x"), None)], tag="no-platform")
    b.case("no-platform", b.ref(repo, "no-platform"), expect="pull-fail:linux/amd64",
           note="index without linux/amd64: refused, naming the platform")

    # ---- item 2: layers ----------------------------------------------------------------------
    repo = "corpus/names"
    l = Layer().dir("/", mode=0o755).dir("./").file("./dotted", b"1").file("plain", b"2")
    l.file("/rooted", b"3").dir("./dir/", mode=0o750).file("/dir/a", b"4").file("dir/b", b"5")
    l.dir("dir2").file("./dir2/c", b"6")
    b.image(repo, [l.bytes()])
    b.case("names", b.ref(repo), note='entries named "/", "./", "./x", "x" and "/x" alike')

    repo = "corpus/hardlinks"
    l = Layer().dir("h/").file("h/orig", b"linked data", mode=0o640, uid=1000, gid=1000)
    l.hardlink("h/link1", "h/orig").dir("h/sub/").hardlink("h/sub/link2", "./h/orig")
    l.file("h/replaced", b"old").hardlink("h/replaced", "h/orig")
    b.image(repo, [l.bytes()])
    b.case("hardlinks", b.ref(repo), note="hard links in one layer (./ and plain targets, one "
           "replacing a file)")
    repo = "corpus/hardlink-lower"
    lower = Layer().dir("hl/").file("hl/orig", b"in the lower layer").bytes()
    upper = Layer().dir("hl/").hardlink("hl/link", "hl/orig").bytes()
    b.image(repo, [lower, upper])
    b.case("hardlink-lower", b.ref(repo), expect="pull-fail:hl/link",
           note="a hard link to a file of a lower layer: refused by both (husk-cri unpacks "
           "each layer on its own, content-addressed by diff_id, and names the entry)")

    # a layer adding a file below a directory of a lower layer without an entry for that
    # directory (hand-made tarballs do): the directory keeps the lower layer's owner and mode?
    repo = "corpus/implicit-parent"
    lower = Layer().dir("p/", mode=0o750, uid=1000, gid=1000).dir("p/q/", mode=0o700, uid=1000)
    lower = lower.file("p/q/old", b"o").bytes()
    upper = Layer().file("p/q/new", b"n").file("fresh/dir/file", b"f").bytes()
    b.image(repo, [lower, upper])
    b.case("implicit-parent", b.ref(repo), mask="known-gap",
           note="entries whose parent directories have no entry in their layer (one existing "
           "below, one not); known gap: husk-cri makes such directories 0755 root, containerd "
           "copies the lower layer's owner and mode")

    repo = "corpus/symlinks"
    l = Layer().dir("s/").file("s/target", b"t").symlink("s/rel", "target")
    l.symlink("s/abs", "/s/target").symlink("s/dangling", "/nowhere/at/all")
    l.symlink("s/up", "../../../../../etc/passwd").symlink("s/dirlink", "/etc")
    l.symlink("s/self", "self").file("s/over", b"file").symlink("s/over", "target")
    b.image(repo, [l.bytes()])
    b.case("symlinks", b.ref(repo), note="symlinks absolute, relative, dangling, escaping "
           "(stored verbatim), to a dir, a symlink replacing a file")

    # whiteouts: l2 has the content, l3 hides some of it (file, dir, whole tree, opaque dir)
    # and, in its own entries, has a whiteout before content of the same name (the content
    # stays: whiteouts apply to lower layers) and an opaque marker after its own content
    l2 = Layer().file("gone", b"g").dir("d/").file("d/x", b"x").file("d/y", b"y")
    l2.dir("e/").file("e/z", b"z").dir("tree/").dir("tree/deep/").file("tree/deep/f", b"f")
    l2.file("keep", b"k").dir("o/").file("o/lower", b"l")
    l3 = Layer().file(".wh.gone", b"").dir("d/").file("d/.wh..wh..opq", b"")
    l3.file("d/new", b"new").dir("e/").file("e/.wh.z", b"").file("e/z", b"z again")
    l3.file(".wh.tree", b"").dir("o/").file("o/mine", b"m").file("o/.wh..wh..opq", b"")
    repo = "corpus/whiteouts"
    b.image(repo, [l2.bytes(), l3.bytes()])
    b.case("whiteouts", b.ref(repo), note="AUFS whiteouts and opaque dirs hiding lower "
           "layers; in the same layer a whiteout before content, an opaque marker after it",
           want=["/e/z file 0644 0:0 size=7", "/o/mine file", "/d/new file"])
    # a whiteout after content of its name in the same layer: containerd removes the content
    # (and so does husk-cri: the entry order decides, as in docker)
    repo = "corpus/whiteout-after-content"
    l3 = Layer().file("f2", b"same layer").file(".wh.f2", b"").file("other", b"o")
    b.image(repo, [Layer().file("f2", b"lower").bytes(), l3.bytes()])
    b.case("whiteout-after-content", b.ref(repo), note="a whiteout after the file it names, "
           "in one layer", want=["/other file", "!/f2 "])
    # AUFS hard link directory (.wh..wh.plnk) metadata: skipped
    repo = "corpus/aufs-meta"
    l3 = Layer().dir(".wh..wh.plnk/").file(".wh..wh.plnk/123.456", b"aufs").file("a", b"a")
    b.image(repo, [l3.bytes()])
    b.case("aufs-meta", b.ref(repo), note="AUFS metadata (.wh..wh.plnk) is not unpacked")

    repo = "corpus/devices"
    l = Layer().dir("nodes/").add("nodes/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    l.add("nodes/loop", tarfile.BLKTYPE, mode=0o660, dev=(7, 0), gid=6)
    l.add("nodes/fifo", tarfile.FIFOTYPE, mode=0o620, uid=1000, gid=1000)
    b.image(repo, [l.bytes()])
    b.case("devices", b.ref(repo), note="char and block devices, a fifo")

    repo = "corpus/long-names"
    l = Layer().dir("long/")
    deep = "long/" + "/".join(["d" * 60] * 6)
    l.dir(deep + "/").file(deep + "/" + "f" * 200, b"deep")
    l.file("long/" + "n" * 255, b"max component")
    l.symlink("long/link", "/" + "t" * 300)
    l.hardlink("long/hard", deep + "/" + "f" * 200)
    l.file("long/ünïcödé ✓", b"utf-8")
    l.file("long/pax-time", b"t", pax={"mtime": "1234567890.123456789"})
    b.image(repo, [l.bytes()])
    b.case("long-names", b.ref(repo), note="PAX long names (255-byte component, deep path), "
           "long link targets, UTF-8 names, PAX fractional mtime")

    # the expanded file's line in the checker's manifest (FNV-1a of 3 MiB with data at 0,
    # 1 MiB and 3 MiB), so a runtime that fails on one format is still checked on the other
    sparse_line = "/sparse/file file 0644 0:0 size=3145732 hash=840034eb65c95916"
    for fmt in ("gnu", "pax"):
        repo = f"corpus/sparse-{fmt}"
        b.image(repo, [gnu_tar_sparse(fmt)])
        b.case(f"sparse-{fmt}", b.ref(repo), note=f"a sparse file written by GNU tar "
               f"--sparse --format={fmt}", want=[sparse_line])

    repo = "corpus/xattrs"
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    # security.capability v2: cap_net_raw (13) permitted, effective flag set
    cap = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
    l = Layer().dir("x/").file("x/ping", busybox, mode=0o755,
                               xattrs={"security.capability": cap})
    l.file("x/user", b"u", xattrs={"user.note": b"hello", "user.bin": b"\x00\xff"})
    l.file("x/trusted", b"t", xattrs={"trusted.secret": b"host only"})
    l.dir("x/dir/", xattrs={"user.dirnote": b"d"})
    b.image(repo, [l.bytes()])
    b.case("xattrs", b.ref(repo), note="security.capability (ping-style cap_net_raw), user.* "
           "on files and dirs; trusted.* (invisible in containers)")

    repo = "corpus/modes"
    l = Layer().dir("m/").file("m/setuid", b"s", mode=0o4755).file("m/setgid", b"g", mode=0o2711)
    l.dir("m/sgid-dir/", mode=0o2775, gid=50).dir("m/sticky/", mode=0o1777)
    l.file("m/none", b"0", mode=0o000).file("m/owned", b"o", uid=1000, gid=1000, mode=0o600)
    l.file("m/nobody", b"n", uid=65534, gid=65534).file("m/big-ids", b"b", uid=70000,
                                                             gid=80000)
    # a read-only directory whose entries come after it: its mode must be applied last
    l.dir("m/ro/", mode=0o500, uid=1000).file("m/ro/inner", b"i").dir("m/ro/sub/", mode=0o555)
    l.file("m/ro/sub/leaf", b"l").file("m/old", b"old", mtime=1)
    b.image(repo, [l.bytes()])
    b.case("modes", b.ref(repo), note="setuid/setgid/sticky, ownership, read-only dirs before "
           "their contents, timestamps")

    repo = "corpus/empty-layers"
    empty = Layer().bytes()
    b.image(repo, [empty, Layer().file("after-empty", b"a").bytes(), empty],
            comp=["gzip", "gzip", "plain", "zstd"])
    b.case("empty-layers", b.ref(repo), note="empty layers (gzip and zstd of an empty tar)")

    missing = f"http://{b.host}/corpus-foreign-layer-not-here"
    repo = "corpus/foreign-docker"
    b.image(repo, [Layer().file("foreign", b"f").bytes()], kind="docker",
            layer_extra={1: {"kind": "docker-foreign", "urls": [missing]}})
    b.case("foreign-docker", b.ref(repo), note="a foreign layer (urls answer 404): fetched from "
           "the registry, as containerd falls back to it")
    repo = "corpus/nondistributable-oci"
    b.image(repo, [Layer().file("nondist", b"n").bytes()],
            layer_extra={1: {"kind": "oci-nondist", "urls": [missing]}})
    b.case("nondistributable-oci", b.ref(repo), note="an OCI non-distributable layer with urls")

    # hostile layers: refused by husk-cri with the entry named
    for name, layer, entry in (
            ("hostile-dotdot", Layer().file("../../escape", b"x"), "../../escape"),
            ("hostile-symlink-write",
             Layer().symlink("evil", "/etc").file("evil/hostile", b"x"), "evil/hostile"),
            ("hostile-hardlink-out",
             Layer().hardlink("link", "../../../etc/shadow"), "link")):
        repo = f"corpus/{name}"
        b.image(repo, [layer.bytes()])
        b.case(name, b.ref(repo), expect=f"pull-fail:{entry}",
               note="hostile entry: husk-cri refuses the layer naming it")

    # ---- item 3: image config -----------------------------------------------------------------
    repo = "corpus/config-entrypoint"
    b.image(repo, [], cfg={"Entrypoint": ["/checker", "from-entrypoint"],
                           "Cmd": ["from-cmd"],
                           "Env": [PATH_ENV, "IMAGE_ENV=1", "OVERRIDDEN=image"],
                           "WorkingDir": "/work/created/here",
                           "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                           "StopSignal": "SIGQUIT",
                           "Labels": {"org.opencontainers.image.title": "corpus"}})
    b.case("config-entrypoint", b.ref(repo), run="image", note="Entrypoint + Cmd, Env, a "
           "WorkingDir missing from the rootfs, ExposedPorts, StopSignal, Labels")
    b.case("config-entrypoint-args", b.ref(repo), run="args", note="the image's Entrypoint "
           "with the request's args")
    # the process line husk-cri must give: the image user's groups from /etc/group added
    for tag, user, note, groups in (
            ("name", "app", "User as a name", "uid=1000 gid=1000 groups=50,1000,2000 "),
            ("uid", "1000", "User as a uid", "uid=1000 gid=1000 groups=50,1000,2000 "),
            ("name-group", "app:staff", "User as name:group",
             "uid=1000 gid=50 groups=50,2000 "),
            ("uid-gid", "1001:2000", "User as uid:gid", "uid=1001 gid=2000 groups=2000 "),
            ("uid-unknown", "4242", "a uid not in /etc/passwd",
             "uid=4242 gid=0 groups=0 ")):
        repo = "corpus/config-user"
        b.image(repo, [], cfg={"User": user}, tag=tag)
        b.case(f"user-{tag}", b.ref(repo, tag), note=note, mask="groups", want=[groups])
    repo = "corpus/config-user"
    b.image(repo, [], cfg={"User": "ghost"}, tag="missing")
    b.case("user-missing", b.ref(repo, "missing"), expect="create-fail:ghost",
           note="User naming no one in /etc/passwd: CreateContainer fails")
    repo = "corpus/config-volumes"
    l = Layer().dir("data/", mode=0o750, uid=1000, gid=1000)
    l.file("data/seed", b"from the image", uid=1000, gid=1000)
    b.image(repo, [l.bytes()], cfg={"Volumes": {"/data": {}, "/fresh/vol": {}}})
    b.case("config-volumes", b.ref(repo), run="cmd:/data:/fresh/vol", note="Volumes: image "
           "content copied up (/data), a missing path made empty (/fresh/vol)")


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    b = Builder(sys.argv[1], sys.argv[2], sys.argv[3])
    build(b)
    b.write()


if __name__ == "__main__":
    main()
