"""Fetching datasets: resumable streaming download, and KSDD2 fetched and unpacked in one step.

Extraction, which trusts nothing in an archive (``safe_extract``, ``Limits``), lives in
``dualpatch.data.extract``.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from dualpatch.data.extract import CHUNK, Limits, check_archive, extract_into
from dualpatch.data.ksdd2 import SPLITS, find_root, layout_warnings
from dualpatch.errors import ConfigError, DataError
from dualpatch.events import staged
from dualpatch.fileio import check_output_dir, output_dir, sha256_file

KSDD2_URL = "http://go.vicos.si/kolektorsdd2"
OFFLINE_HINT = "fetch the zip by hand (e.g. in a browser) and pass it with --archive PATH"


# ----------------------------------------------------------------------------- download


def check_sha256(value: str | None) -> str | None:
    """Normalise a user-given SHA-256 (64 hex digits) or fail with a one-line ConfigError."""
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(f"--sha256 {value!r}: expected 64 hexadecimal digits")
    return value


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Stream ``url`` to ``dest``, resuming ``dest.part`` with an HTTP Range request.

    ``dest`` appears only once the whole body is in and matches ``sha256`` (when given); a bad
    download is deleted. An existing ``dest`` is taken as complete (it is only ever renamed into
    place whole) and just checked. Network failures are one-line ``DataError`` messages.
    """
    dest = Path(dest)
    sha256 = check_sha256(sha256)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        _fetch(url, part, connect_timeout, read_timeout, progress)
        if sha256 and (got := sha256_file(part)) != sha256:
            part.unlink()
            raise DataError(
                f"{url}: download has sha256 {got}, expected {sha256}; deleted it "
                "(check --sha256, or the server sent something else)"
            )
        os.replace(part, dest)
    elif sha256 and (got := sha256_file(dest)) != sha256:
        raise DataError(f"{dest}: sha256 is {got}, expected {sha256}; delete it to download again")
    return dest


def _fetch(url: str, part: Path, connect_timeout: float, read_timeout: float, progress: bool):
    """Append the rest of ``url`` to ``part``; restart from zero if the server ignores Range."""
    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "dualpatch", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            # urlopen's timeout covers connecting and waiting for the headers: a short one makes
            # an offline machine fail in seconds instead of hanging.
            resp = urlopen(Request(url, headers=headers), timeout=connect_timeout)
        except HTTPError as exc:
            if exc.code == 416 and offset:
                if exc.headers.get("Content-Range") == f"bytes */{offset}":
                    return  # the .part is already whole: only the rename was missed
                if attempt == 0:  # a stale .part larger than the file: start over
                    part.unlink()
                    continue
            msg = f"cannot download {url}: HTTP {exc.code} {exc.reason}; {OFFLINE_HINT}"
            raise DataError(msg) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(f"cannot reach {url} ({reason}); {OFFLINE_HINT}") from None
        with resp:
            start, total = _body_range(resp, offset)
            if start != offset:
                if attempt == 0:  # the server sent something else than asked: start over
                    part.unlink(missing_ok=True)
                    continue
                raise DataError(f"{url}: server does not honour byte ranges; delete {part}")
            _set_read_timeout(resp, read_timeout)
            _stream(resp, part, start, total, url, progress)
        return


def _body_range(resp, offset: int) -> tuple[int, int | None]:
    """(first byte of the body, total size or None) from the response status and headers."""
    if resp.status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m:
            return -1, None
        return int(m.group(1)), (int(m.group(2)) if m.group(2) != "*" else None)
    length = resp.headers.get("Content-Length")
    return 0, (int(length) if length and length.isdigit() else None)


def _set_read_timeout(resp, seconds: float) -> None:
    # Once connected, a slow server deserves more patience than the connect timeout allows.
    try:
        resp.fp.raw._sock.settimeout(seconds)
    except AttributeError:  # not a plain socket (e.g. a test double): keep the connect timeout
        pass


def _stream(resp, part: Path, start: int, total: int | None, url: str, progress: bool) -> None:
    done = start
    name = f"downloading {part.name.removesuffix('.part')}"
    try:
        with (
            part.open("ab" if start else "wb") as f,
            staged(name, total, unit="B", done=start, progress=progress) as advance,
        ):
            while block := resp.read(CHUNK):
                f.write(block)
                done += len(block)
                advance(len(block))
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(
            f"download of {url} interrupted at {done:,} of {_n(total)} bytes "
            f"({type(exc).__name__}); run the same command again to resume from {part}"
        ) from None
    if total is not None and done != total:
        raise DataError(
            f"download of {url} interrupted at {done:,} of {total:,} bytes; "
            f"run the same command again to resume from {part}"
        )


def _n(total: int | None) -> str:
    return "?" if total is None else f"{total:,}"


# ----------------------------------------------------------------------------- KSDD2

COMMAND = "data download"


def check_url(url: str) -> str:
    """``url`` if it is an http(s) or ftp URL with a host, else a one-line ConfigError."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ftp") or not parts.netloc:
        raise ConfigError(f"--url {url!r}: not an http(s) URL like {KSDD2_URL}")
    return url


def download_ksdd2(
    out: str | os.PathLike[str],
    archive: str | os.PathLike[str] | None = None,
    url: str = KSDD2_URL,
    sha256: str | None = None,
    force: bool = False,
    connect_timeout: float = 5.0,
    limits: Limits = Limits(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Download (or take ``archive``), check and unpack KSDD2 so that ``out`` holds train/ + test/.

    The download is kept beside ``out`` as ``<out>.zip`` so that a rerun needs no network. The
    structure is compared with the official file sets; deviations are warnings with numbers.
    """
    out = Path(out)
    sha256 = check_sha256(sha256)
    check_url(url)
    if archive is not None:
        archive = check_archive(archive)
    if all((out / s).is_dir() for s in SPLITS) and not force:
        log(f"{out} already holds train/ and test/; nothing to do (--force to unpack again)")
        return out
    # before any download: an --out that holds the user's files is refused, not emptied
    check_output_dir(out, COMMAND, force, [archive], legacy=SPLITS)
    if archive is None:
        archive = _download_archive(out, url, sha256, connect_timeout, progress, log)
    elif sha256 and (got := sha256_file(archive)) != sha256:
        raise DataError(f"{archive}: sha256 is {got}, expected {sha256}; not extracting it")
    if sha256:
        log(f"{archive}: sha256 ok")
    with output_dir(out, COMMAND, force, [archive], legacy=SPLITS) as tmp:
        extract_into(archive, tmp, limits, progress)
        _hoist(tmp, find_root(tmp))
    for msg in layout_warnings(out):
        warnings.warn(msg, stacklevel=2)
    log(f"KSDD2 unpacked into {out}")
    return out


def _download_archive(
    out: Path,
    url: str,
    sha256: str | None,
    connect_timeout: float,
    progress: bool,
    log: Callable[[str], None],
) -> Path:
    """Download ``url`` to ``<out>.zip`` (kept for reruns) unless a whole download is there."""
    archive = out.with_name(out.name + ".zip")
    if archive.exists() and not (zipfile.is_zipfile(archive) or tarfile.is_tarfile(archive)):
        # not a download of ours (those appear whole, by rename): someone else's file
        raise DataError(
            f"{archive}: exists and is not a zip or tar archive; move it away or pass "
            "--archive PATH"
        )
    log(f"downloading {url} to {archive}")
    download(url, archive, sha256, connect_timeout, progress=progress)
    if not (zipfile.is_zipfile(archive) or tarfile.is_tarfile(archive)):
        archive.unlink()  # so that a rerun fetches again instead of trusting it
        raise DataError(
            f"{url} did not send a zip or tar archive (a web page?); deleted it; {OFFLINE_HINT}"
        )
    return archive


def _hoist(folder: Path, root: Path) -> None:
    """Move the contents of ``root`` (a single top folder of the zip) up into ``folder``."""
    if root == folder:
        return
    # Rename first, so that a top folder called e.g. "train" cannot collide with its own child.
    staged = root.rename(folder / f".hoist-{os.getpid()}")
    for child in staged.iterdir():
        target = folder / child.name
        if target.is_dir() and not target.is_symlink():  # a same-named stray beside the top folder
            shutil.rmtree(target)
        os.replace(child, target)
    staged.rmdir()
