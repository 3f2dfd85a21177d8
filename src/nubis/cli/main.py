"""The ``nubis`` command: ``serve`` runs the platform; the rest talk to its API."""

from __future__ import annotations

import faulthandler
import logging
import sys
from typing import Annotated

import typer

from nubis.cli import (
    database,
    devcluster,
    identity,
    inventory,
    keypairs,
    networks,
    resources,
    routing,
    server,
    storage,
)
from nubis.cli import ha as _ha  # noqa: F401 - adds the HA commands to instance/host/cluster
from nubis.cli.client import console, pin_certificate, request, save_token

# how long a stopping server waits for open requests and connections to end
GRACEFUL_SHUTDOWN_SECONDS = 10

app = typer.Typer(help="Nubis: a private cloud on libvirt/QEMU hosts", no_args_is_help=True)
app.add_typer(resources.host_app, name="host")
app.add_typer(resources.image_app, name="image")
app.add_typer(resources.flavor_app, name="flavor")
app.add_typer(resources.instance_app, name="instance")
app.add_typer(resources.task_app, name="task")
app.add_typer(devcluster.app, name="devcluster")
app.add_typer(inventory.zone_app, name="zone")
app.add_typer(inventory.cluster_app, name="cluster")
app.add_typer(inventory.group_app, name="rule-group")
app.add_typer(inventory.controller_app, name="controller")
app.add_typer(storage.pool_app, name="pool")
app.add_typer(storage.offering_app, name="disk-offering")
app.add_typer(storage.volume_app, name="volume")
app.add_typer(storage.snapshot_app, name="snapshot")
app.add_typer(networks.network_app, name="network")
app.add_typer(networks.group_app, name="security-group")
app.add_typer(keypairs.keypair_app, name="keypair")
app.add_typer(networks.port_app, name="port")
app.add_typer(routing.router_app, name="router")
app.add_typer(routing.floating_app, name="floating-ip")
app.add_typer(identity.user_app, name="user")
app.add_typer(identity.project_app, name="project")
app.add_typer(identity.role_app, name="role")
app.add_typer(identity.quota_app, name="quota")
app.add_typer(identity.apikey_app, name="apikey")
app.add_typer(identity.audit_app, name="audit")
app.add_typer(server.app, name="server")
app.add_typer(database.app, name="db")
app.command()(identity.whoami)


def _logging(log_file: str) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=logging.INFO,
        format=fmt,
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)],
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
) -> None:
    """Run Nubis in the foreground (API on https://HOST:PORT/api/v1; plain HTTP only
    with the plain_http setting, behind a TLS proxy)."""
    import uvicorn

    from nubis import tls
    from nubis.api.app import create_app
    from nubis.api.logs import hide_secrets_in_access_log
    from nubis.config import get_settings
    from nubis.platform import Platform

    settings = get_settings()
    settings.ensure_dirs()
    _logging(str(settings.log_dir / "nubis.log"))
    # a crash inside a C library (libvirt) leaves every thread's Python stack on stderr
    faulthandler.enable()
    platform = Platform(settings)
    listen_host = host or settings.listen_host
    listen_port = port or settings.listen_port
    ssl: dict[str, str] = {}
    scheme = "http"
    if not settings.plain_http:
        cert = tls.server_certificate(
            settings.data_dir,
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_names,
            listen_host,
        )
        ssl = {"ssl_certfile": str(cert.cert_file), "ssl_keyfile": str(cert.key_file)}
        scheme = "https"

    def say(text: str) -> None:
        # whole lines, copied as they are: no markup (the console prints no emoji codes)
        console.print(text, soft_wrap=True, highlight=False, markup=False)

    def announce() -> None:
        hide_secrets_in_access_log()  # uvicorn has set its loggers up by now
        say(f"Nubis is up: {scheme}://{listen_host}:{listen_port}/api/v1 (docs at /api/v1/docs)")
        if ssl:
            say(f"TLS certificate {ssl['ssl_certfile']}, SHA-256 fingerprint {cert.fingerprint}")
        else:
            say("plain HTTP (plain_http is set): put a TLS proxy in front")
        if platform.admin_password_file:
            say(f"user 'admin': password in {platform.admin_password_file}")
            security = platform.admin_password_file.with_name("security-password")
            if security.exists():
                say(f"user 'security' (security administrator): password in {security}")

    api = create_app(platform, on_started=announce)

    # a client that keeps its connection open does not hold a stopping server up
    uvicorn.run(
        api,
        host=listen_host,
        port=listen_port,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=ssl.get("ssl_certfile"),
        ssl_keyfile=ssl.get("ssl_keyfile"),
    )


@app.command()
def login(
    username: Annotated[str, typer.Option(prompt=True)] = "admin",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, envvar="NUBIS_PASSWORD")
    ] = "",
    project: Annotated[
        str | None, typer.Option(help="the project to work in (default: your first)")
    ] = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            envvar="NUBIS_FINGERPRINT",
            help="the SHA-256 fingerprint of the server's certificate (nubis serve prints "
            "it): it is checked, then kept, and the server verified against it from now on",
        ),
    ] = None,
) -> None:
    """Get a token and keep it in ~/.config/nubis/token (mode 0600)."""
    if fingerprint:
        pin_certificate(fingerprint)
    body = {"username": username, "password": password, "project": project}
    data = request("POST", "/auth/tokens", auth=False, json=body).json()
    save_token(data["token"])
    roles = ", ".join(data["roles"]) or "no role"
    console.print(f"logged in as {username} ({roles}); token valid until {data['expires_at']}")


if __name__ == "__main__":  # pragma: no cover
    app()
