"""HTTP client of the CLI: base URL, saved token, errors as readable messages."""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from nubis import tls
from nubis.services.identity import signing

# no emoji codes: rich would turn the ":cd:" of a fingerprint or a MAC address into 💿
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)
TOKEN_FILE = Path(os.environ.get("NUBIS_TOKEN_FILE", Path.home() / ".config/nubis/token"))
# the server's certificate, saved by `nubis login --fingerprint` once it matched
PINNED_CERT = TOKEN_FILE.with_name("server-cert.pem")


def base_url() -> str:
    return os.environ.get("NUBIS_URL", "https://127.0.0.1:8080").rstrip("/")


def tls_verify() -> str | bool:
    """What the server's certificate is checked against: ``NUBIS_CA_FILE``; else the
    certificate pinned by ``nubis login --fingerprint``; else, on the server itself,
    the certificate ``nubis serve`` made (``<data_dir>/tls/cert.pem``); else the
    system's CAs. Never nothing."""
    if os.environ.get("NUBIS_CA_FILE"):
        return os.environ["NUBIS_CA_FILE"]
    if PINNED_CERT.exists():
        return str(PINNED_CERT)
    local = Path(os.environ.get("NUBIS_DATA_DIR", "/var/lib/nubis")) / "tls" / "cert.pem"
    if os.access(local, os.R_OK):
        return str(local)
    return True


def http_client(timeout: float = 600, **kwargs: Any) -> httpx.Client:
    """An HTTP client for the server, its certificate checked (see ``tls_verify``)."""
    return httpx.Client(timeout=timeout, verify=tls_verify(), **kwargs)


def pin_certificate(expected: str) -> None:
    """Fetch the server's certificate (nothing else is sent), check that its SHA-256
    fingerprint is ``expected`` and keep it: every later request verifies the server
    against it."""
    url = httpx.URL(base_url())
    if url.scheme != "https":
        raise fail(f"{base_url()} is not https: there is no certificate to pin")
    try:
        pem = ssl.get_server_certificate((url.host, url.port or 443), timeout=30)
    except OSError as exc:
        raise fail(f"cannot reach Nubis at {base_url()}: {exc}") from exc
    found = tls.fingerprint(pem.encode())
    if not tls.same_fingerprint(found, expected):
        raise fail(
            f"the server's certificate has the fingerprint {found}, not {expected}: "
            "not trusted (is someone in between?)"
        )
    PINNED_CERT.parent.mkdir(parents=True, exist_ok=True)
    PINNED_CERT.write_text(pem)


def saved_token() -> str | None:
    if os.environ.get("NUBIS_TOKEN"):
        return os.environ["NUBIS_TOKEN"]
    return TOKEN_FILE.read_text().strip() if TOKEN_FILE.exists() else None


def save_token(token: str) -> None:
    TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")  # the server's words as they are
    return typer.Exit(1)


def read_text(path: Path) -> str:
    """A text file the user names (a key, user-data); a clear error if unreadable."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}") from exc


def api_key() -> tuple[str, str] | None:
    """``NUBIS_API_KEY`` and ``NUBIS_API_SECRET``: sign requests instead of a token."""
    key, secret = os.environ.get("NUBIS_API_KEY"), os.environ.get("NUBIS_API_SECRET")
    return (key, secret) if key and secret else None


def sign_request(req: httpx.Request, key: str, secret: str) -> None:
    """Add the signature headers (see docs/identity.md) to a built request."""
    if req.headers.get("content-type", "").startswith("application/octet-stream"):
        payload = signing.UNSIGNED_PAYLOAD
    else:
        payload = signing.body_hash(req.read())
    stamp = str(int(time.time()))
    query = parse_qsl(req.url.query.decode(), keep_blank_values=True)
    canonical = signing.canonical_request(req.method, req.url.path, query, payload, stamp)
    req.headers[signing.KEY_HEADER] = key
    req.headers[signing.TIMESTAMP_HEADER] = stamp
    req.headers[signing.SIGNATURE_HEADER] = signing.sign(secret, canonical)


def api_client(timeout: float = 60) -> httpx.Client:
    """A client of the API (``/api/v1``) as the logged-in user or the API key, for
    commands that make many calls (the devcluster's)."""
    signing = api_key()
    hooks = {"request": [lambda req: sign_request(req, *signing)]} if signing else {}
    return http_client(
        timeout,
        base_url=f"{base_url()}/api/v1",
        headers=_auth_headers({}, True),
        event_hooks=hooks,
    )


def _auth_headers(headers: dict[str, str], auth: bool) -> dict[str, str]:
    if auth and api_key() is None:
        token = saved_token()
        if token is None:
            raise fail("not logged in: run `nubis login` first (or set NUBIS_TOKEN)")
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        raise fail(f"{message} (HTTP {resp.status_code})")
    return resp


def request(method: str, path: str, auth: bool = True, **kwargs: Any) -> httpx.Response:
    headers = _auth_headers(kwargs.pop("headers", {}), auth)
    try:
        with http_client() as http:
            req = http.build_request(
                method, f"{base_url()}/api/v1{path}", headers=headers, **kwargs
            )
            signing = api_key()
            if auth and signing is not None:
                sign_request(req, *signing)
            resp = http.send(req)
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach Nubis at {base_url()}: {exc}") from exc
    return _check(resp)


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    )


def upload_file(path: Path, api_path: str, params: dict[str, Any]) -> httpx.Response:
    """POST a file as application/octet-stream, streamed, with a progress bar."""
    size = path.stat().st_size

    with _bar() as progress, open(path, "rb") as fh:
        bar = progress.add_task(f"upload {path.name}", total=size)

        def chunks() -> Iterator[bytes]:
            while data := fh.read(1024 * 1024):
                progress.advance(bar, len(data))
                yield data

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return request("POST", api_path, params=params, content=chunks(), headers=headers)


def download_file(api_path: str, dest: Path) -> int:
    """GET a file into ``dest`` (written whole or not at all), with a progress bar."""
    partial = dest.with_name(dest.name + ".partial")
    headers = _auth_headers({}, True)
    try:
        with http_client() as http:
            req = http.build_request("GET", f"{base_url()}/api/v1{api_path}", headers=headers)
            signing = api_key()
            if signing is not None:
                sign_request(req, *signing)
            resp = http.send(req, stream=True)
            _save_stream(resp, dest, partial)
        return dest.stat().st_size
    except httpx.HTTPError as exc:
        raise fail(f"download failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _save_stream(resp: httpx.Response, dest: Path, partial: Path) -> None:
    """Write a streamed answer into ``dest``, whole or not at all."""
    try:
        if resp.status_code >= 400:
            resp.read()
            _check(resp)
        total = int(resp.headers.get("content-length", 0)) or None
        with _bar() as progress, open(partial, "wb") as fh:
            bar = progress.add_task(f"download {dest.name}", total=total)
            for data in resp.iter_bytes(1024 * 1024):
                fh.write(data)
                progress.advance(bar, len(data))
            written = fh.tell()
    finally:
        resp.close()
    if total is not None and written != total:
        raise fail(f"the download ended after {written} of {total} bytes")
    os.replace(partial, dest)


def cell(value: Any) -> Text:
    """A table cell showing the value as it is (no markup: data may hold brackets)."""
    return Text("" if value is None else str(value))


def show(data: Any, fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        console.print_json(json.dumps(data))
        return
    rows = data["items"] if isinstance(data, dict) and "items" in data else data
    if isinstance(rows, dict):
        table = Table("field", "value")
        for key, value in rows.items():
            table.add_row(key, cell(value))
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*(cell(row.get(c)) for c in columns))
    console.print(table)


def wait_for_task(task_id: str, timeout: float = 600) -> dict[str, Any]:
    """Follow a task with a progress bar until it ends; exit 1 if it failed."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=err_console,
        transient=True,
    ) as progress:
        bar = progress.add_task("queued", total=100)
        while True:
            task = request("GET", f"/tasks/{task_id}").json()
            progress.update(
                bar,
                completed=task["progress"],
                description=f"{task['kind']}: {task['step'] or task['status']}",
            )
            if task["status"] in ("succeeded", "failed"):
                break
            if time.monotonic() > deadline:
                raise fail(f"task {task_id} still {task['status']} after {timeout:.0f}s")
            time.sleep(0.5)
    if task["status"] == "failed":
        raise fail(f"task {task['kind']} failed: {task['error']}")
    return task
