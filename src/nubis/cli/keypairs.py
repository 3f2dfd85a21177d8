"""CLI commands for key pairs (SSH public keys given to instances)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli.client import console, fail, read_text, request, show
from nubis.cli.resources import Fmt

keypair_app = typer.Typer(help="Key pairs (SSH keys for instances)", no_args_is_help=True)
KEYPAIR_COLS = ["name", "key_type", "fingerprint", "id"]


@keypair_app.command("list")
def keypair_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/key-pairs").json(), fmt, KEYPAIR_COLS)


@keypair_app.command("create")
def keypair_create(
    name: str,
    public_key_file: Annotated[
        Path | None, typer.Option(help="import this public key (e.g. ~/.ssh/id_ed25519.pub)")
    ] = None,
    private_key_file: Annotated[
        Path | None,
        typer.Option(help="generated pair: write the private key here (mode 0600)"),
    ] = None,
    key_type: Annotated[str, typer.Option(help="generated pair: ed25519 or rsa")] = "ed25519",
    fmt: Fmt = "table",
) -> None:
    """Import a public key, or generate a pair: its private key is shown (or written
    to --private-key-file) this once; Nubis does not keep it."""
    if public_key_file is not None and private_key_file is not None:
        raise fail("--private-key-file is for a generated pair, not an imported key")
    if private_key_file is not None and private_key_file.exists():
        raise fail(f"{private_key_file} exists: not overwriting a key")
    body = {
        "name": name,
        "public_key": read_text(public_key_file) if public_key_file else None,
        "key_type": key_type,
    }
    created = request("POST", "/key-pairs", json=body).json()
    private = created.pop("private_key", None)
    show(created, fmt, KEYPAIR_COLS)
    if private is None:
        return
    if private_key_file is None:
        console.print(private, markup=False, highlight=False)
        return
    fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private)
    console.print(f"private key written to {private_key_file}")


@keypair_app.command("show")
def keypair_show(ref: str, fmt: Fmt = "json") -> None:
    show(request("GET", f"/key-pairs/{ref}").json(), fmt, KEYPAIR_COLS + ["public_key"])


@keypair_app.command("delete")
def keypair_delete(ref: str) -> None:
    """Instances already given the key keep it."""
    request("DELETE", f"/key-pairs/{ref}")
    console.print(f"key pair {ref} deleted")
