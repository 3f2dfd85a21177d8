"""HTTP client of the CLI: base URL, saved token, errors as readable messages."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
TOKEN_FILE = Path(os.environ.get("NUBIS_TOKEN_FILE", Path.home() / ".config/nubis/token"))


def base_url() -> str:
    return os.environ.get("NUBIS_URL", "http://127.0.0.1:8080").rstrip("/")


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
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def request(method: str, path: str, auth: bool = True, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if auth:
        token = saved_token()
        if token is None:
            raise fail("not logged in: run `nubis login` first (or set NUBIS_TOKEN)")
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = httpx.request(
            method, f"{base_url()}/api/v1{path}", headers=headers, timeout=600, **kwargs
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach Nubis at {base_url()}: {exc}") from exc
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        raise fail(f"{message} (HTTP {resp.status_code})")
    return resp


def show(data: Any, fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        console.print_json(json.dumps(data))
        return
    rows = data["items"] if isinstance(data, dict) and "items" in data else data
    if isinstance(rows, dict):
        table = Table("field", "value")
        for key, value in rows.items():
            table.add_row(key, "" if value is None else str(value))
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
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
