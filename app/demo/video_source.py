"""Where the demo video comes from: PETS2009 S2.L1 View_001, as shipped in Debian's ``opencv-doc``.

The product ships no video. The demo needs PETS2009 S2.L1 View_001 (``vtest.avi``, 768×576, 795 frames),
which Debian redistributes inside the ``opencv-doc`` package; fetching it with ``apt-get download`` uses the
machine's own package mirror and needs no root. Order of preference: ``SPOTON_DEMO_VIDEO`` (an explicit file
wins and must exist), then the copy cached under ``<data_dir>/demo/source/``, then a fresh download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import cv2

log = logging.getLogger(__name__)

DEBIAN_PACKAGE = "opencv-doc"
PATH_IN_PACKAGE = "usr/share/doc/opencv-doc/examples/data/vtest.avi"
"""Where ``vtest.avi`` sits inside ``opencv-doc`` (checked in 4.6.0+dfsg-12, Debian 12); any ``vtest.avi``
member (also ``.gz``/``.xz``) is accepted if a later package moves it."""
VTEST_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
"""SHA-256 of ``vtest.avi`` in opencv-doc 4.6.0+dfsg-12; a different file only warns (re-encodes work too)."""
VTEST_SIZE = (768, 576)
VTEST_FRAMES = 795
VTEST_TRUE_FPS = 7.0
"""The true frame rate of the PETS2009 recordings; the AVI header says 10."""
SOURCE_SUBDIR = Path("demo") / "source"


class DemoVideoError(RuntimeError):
    """The demo video cannot be obtained; the message says what to do about it."""


class DemoVideoSettings(Protocol):
    """The two settings this module reads (``app.core.config.Settings`` has them)."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def demo_video(self) -> Path | None: ...


@dataclass(frozen=True, slots=True)
class DemoVideoParams:
    """Plain parameters for callers that have no ``Settings`` (tests, scripts)."""

    data_dir: Path
    demo_video: Path | None = None


@dataclass(frozen=True, slots=True)
class VideoCheck:
    width: int
    height: int
    frames: int
    sha256: str


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_video(path: Path) -> VideoCheck:
    """Open the file with OpenCV and make sure it is View_001-shaped (the calibration depends on 768×576).

    Raises :class:`DemoVideoError` if it does not open or has the wrong size; warns on an unexpected frame
    count or checksum, since a re-encoded copy of the same recording is still usable.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DemoVideoError(f"{path}: OpenCV cannot open this video")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise DemoVideoError(f"{path}: OpenCV opens the file but cannot decode a frame")
        height, width = frame.shape[:2]
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if (width, height) != VTEST_SIZE:
        raise DemoVideoError(
            f"{path}: {width}×{height}, expected {VTEST_SIZE[0]}×{VTEST_SIZE[1]} "
            "(PETS2009 S2.L1 View_001; the demo's camera calibration is for that view)"
        )
    if abs(frames - VTEST_FRAMES) > 5:
        log.warning("%s: %d frames, expected about %d (PETS2009 S2.L1 View_001)", path, frames, VTEST_FRAMES)
    digest = sha256_of(path)
    if digest != VTEST_SHA256:
        log.warning(
            "%s: SHA-256 %s differs from the known vtest.avi (%s); using it anyway",
            path,
            digest,
            VTEST_SHA256,
        )
    return VideoCheck(width, height, frames, digest)


def obtain_demo_video(settings: DemoVideoSettings | None = None) -> Path:
    """Return a local path to PETS2009 S2.L1 View_001, downloading ``opencv-doc`` once if needed."""
    if settings is None:
        from app.core.config import get_settings

        settings = get_settings()
    if settings.demo_video is not None:
        explicit = Path(settings.demo_video).expanduser()
        if not explicit.is_file():
            raise DemoVideoError(
                f"SPOTON_DEMO_VIDEO={explicit}: no such file (point it at PETS2009 S2.L1 View_001, "
                "vtest.avi, or unset it to fetch the video from Debian's opencv-doc package)"
            )
        check_video(explicit)
        log.info("demo video: %s (SPOTON_DEMO_VIDEO)", explicit)
        return explicit

    target = Path(settings.data_dir).expanduser() / SOURCE_SUBDIR / "vtest.avi"
    if target.is_file():
        try:
            check_video(target)
            log.info("demo video: %s (cached)", target)
            return target
        except DemoVideoError as exc:
            log.warning("cached demo video unusable (%s); fetching it again", exc)
            target.unlink()
    download_vtest(target)
    check_video(target)
    return target


def download_vtest(target: Path) -> Path:
    """Fetch ``opencv-doc`` with ``apt-get download`` and place its ``vtest.avi`` at ``target`` atomically."""
    apt_get = shutil.which("apt-get")
    dpkg_deb = shutil.which("dpkg-deb")
    if apt_get is None or dpkg_deb is None:
        raise DemoVideoError(
            "cannot fetch the demo video: apt-get/dpkg-deb not found (not a Debian/Ubuntu system). "
            "Set SPOTON_DEMO_VIDEO to a copy of vtest.avi (PETS2009 S2.L1 View_001, e.g. from OpenCV's "
            "samples/data)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spoton-opencv-doc-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        log.info("downloading Debian package %s (about 96 MB) for the demo video", DEBIAN_PACKAGE)
        deb = _apt_download(apt_get, tmp)
        mb = deb.stat().st_size / 1e6
        log.info("downloaded %s (%.1f MB) in %.1f s", deb.name, mb, time.monotonic() - t0)
        part = target.parent / f".{target.name}.{os.getpid()}.part"
        try:
            _extract_vtest(dpkg_deb, deb, part)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    log.info("demo video saved to %s", target)
    return target


def _apt_download(apt_get: str, workdir: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [apt_get, "download", DEBIAN_PACKAGE],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    result = attempt()
    if result.returncode != 0 and _lists_missing(result.stderr):
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            log.info("apt package lists lack %s; running apt-get update", DEBIAN_PACKAGE)
            update = subprocess.run([apt_get, "update"], capture_output=True, text=True, timeout=900, check=False)
            if update.returncode != 0:
                raise DemoVideoError(f"apt-get update failed: {update.stderr.strip()[-500:]}")
            result = attempt()
        else:
            raise DemoVideoError(
                f"apt-get cannot find {DEBIAN_PACKAGE}: the package lists are missing or stale. Run "
                "'sudo apt-get update' once (or set SPOTON_DEMO_VIDEO to a copy of vtest.avi)."
            )
    if result.returncode != 0:
        raise DemoVideoError(
            f"'apt-get download {DEBIAN_PACKAGE}' failed ({result.returncode}): {result.stderr.strip()[-500:]}"
        )
    debs = sorted(workdir.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise DemoVideoError(f"'apt-get download {DEBIAN_PACKAGE}' left no .deb in {workdir}")
    return debs[-1]


def _lists_missing(stderr: str) -> bool:
    text = stderr.lower()
    signs = ("unable to locate package", "has no installation candidate", "can't select")
    return any(s in text for s in signs)


def _extract_vtest(dpkg_deb: str, deb: Path, dest: Path) -> None:
    """Stream the package's file system through ``dpkg-deb --fsys-tarfile`` and copy out ``vtest.avi``.

    Streaming extracts one 8 MB member instead of the package's 13 000 files.
    """
    proc = subprocess.Popen([dpkg_deb, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    found: str | None = None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                base = name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in ("vtest.avi", "vtest.avi.gz", "vtest.avi.xz"):
                    continue
                if found is not None and name != PATH_IN_PACKAGE:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with dest.open("wb") as out:
                    _copy_decompressed(src, out, base)
                found = name
                if name == PATH_IN_PACKAGE:
                    break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DemoVideoError(f"{deb.name}: cannot read the package ({exc})") from exc
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        errors = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        proc.wait()
    if found is None:
        detail = f": {errors[-300:]}" if errors else ""
        raise DemoVideoError(f"{deb.name}: no vtest.avi inside (expected /{PATH_IN_PACKAGE}){detail}")
    log.info("extracted /%s from %s", found, deb.name)


def _copy_decompressed(src: IO[bytes], out: IO[bytes], name: str) -> None:
    if name.endswith(".gz"):
        import gzip

        with gzip.open(src) as g:
            shutil.copyfileobj(g, out, 1 << 20)
    elif name.endswith(".xz"):
        import lzma

        with lzma.open(src) as x:
            shutil.copyfileobj(x, out, 1 << 20)
    else:
        shutil.copyfileobj(src, out, 1 << 20)
