"""CLI commands for storage pools, disk offerings, volumes and snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nubis.cli.client import (
    console,
    download_file,
    request,
    show,
    upload_file,
    wait_for_task,
)
from nubis.cli.resources import Fmt, Wait

pool_app = typer.Typer(help="Storage pools (primary storage)", no_args_is_help=True)
offering_app = typer.Typer(help="Disk offerings", no_args_is_help=True)
volume_app = typer.Typer(help="Volumes (data disks)", no_args_is_help=True)

POOL_COLS = ["name", "kind", "path", "state", "capacity_bytes", "available_bytes", "id"]
OFFERING_COLS = ["name", "size_gib", "format", "provisioning", "secure_delete", "tags"]
VOLUME_COLS = ["name", "size_gib", "format", "provisioning", "status", "attachments", "id"]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="a tag (repeatable)")]


@pool_app.command("list")
def pool_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/storage-pools").json(), fmt, POOL_COLS)


@pool_app.command("create")
def pool_create(
    name: str,
    kind: Annotated[
        str, typer.Option(help="dir | lvm (one host), shared | nfs | rbd | iscsi (a cluster)")
    ],
    path: Annotated[str, typer.Option(help="directory, mount point, VG (lvm), Ceph pool (rbd)")],
    host: Annotated[str | None, typer.Option(help="the host of a dir or lvm pool")] = None,
    cluster: Annotated[str | None, typer.Option(help="the cluster of a shared/nfs pool")] = None,
    nfs_server: str | None = None,
    nfs_export: str | None = None,
    monitor: Annotated[
        list[str] | None, typer.Option(help="rbd: a Ceph monitor, address[:port] (repeat)")
    ] = None,
    auth_user: Annotated[str | None, typer.Option(help="rbd: cephx user; iscsi: CHAP user")] = None,
    auth_key_file: Annotated[
        Path | None,
        typer.Option(help="rbd: a file holding the cephx key; iscsi: the CHAP secret"),
    ] = None,
    portal: Annotated[str | None, typer.Option(help="iscsi: the target's address[:port]")] = None,
    initiator: Annotated[str | None, typer.Option(help="iscsi: the hosts' IQN")] = None,
    tag: Tags = None,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "kind": kind,
        "path": path,
        "host": host,
        "cluster": cluster,
        "nfs_server": nfs_server,
        "nfs_export": nfs_export,
        "monitors": monitor or [],
        "auth_user": auth_user,
        "auth_key": auth_key_file.read_text().strip() if auth_key_file else None,
        "portal": portal,
        "initiator": initiator,
        "tags": tag or [],
    }
    show(request("POST", "/storage-pools", json=body).json(), fmt, POOL_COLS)


@pool_app.command("show")
def pool_show(ref: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/storage-pools/{ref}").json(), fmt, POOL_COLS)


@pool_app.command("refresh")
def pool_refresh(ref: str, fmt: Fmt = "table") -> None:
    show(request("POST", f"/storage-pools/{ref}/actions/refresh").json(), fmt, POOL_COLS)


@pool_app.command("delete")
def pool_delete(ref: str) -> None:
    request("DELETE", f"/storage-pools/{ref}")
    console.print(f"storage pool {ref} deleted")


@offering_app.command("list")
def offering_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/disk-offerings").json(), fmt, OFFERING_COLS)


@offering_app.command("create")
def offering_create(
    name: str,
    size_gib: Annotated[int | None, typer.Option(help="omit: the user picks the size")] = None,
    format: Annotated[str, typer.Option("--disk-format", help="qcow2 | raw")] = "qcow2",
    provisioning: Annotated[str, typer.Option(help="thin | thick | thick-lazy-zeroed")] = "thin",
    secure_delete: bool = False,
    tag: Tags = None,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "size_gib": size_gib,
        "format": format,
        "provisioning": provisioning,
        "secure_delete": secure_delete,
        "tags": tag or [],
    }
    show(request("POST", "/disk-offerings", json=body).json(), fmt, OFFERING_COLS)


@offering_app.command("delete")
def offering_delete(ref: str) -> None:
    request("DELETE", f"/disk-offerings/{ref}")
    console.print(f"disk offering {ref} deleted")


def _volume_rows(data: dict) -> dict:
    def summary(v: dict) -> dict:
        names = ", ".join(f"{a['instance_id'][:8]}:{a['target']}" for a in v["attachments"])
        return {**v, "attachments": names}

    if "items" in data:
        return {**data, "items": [summary(v) for v in data["items"]]}
    return summary(data)


@volume_app.command("list")
def volume_list(fmt: Fmt = "table") -> None:
    data = request("GET", "/volumes").json()
    show(data if fmt == "json" else _volume_rows(data), fmt, VOLUME_COLS)


@volume_app.command("show")
def volume_show(ref: str, fmt: Fmt = "table") -> None:
    data = request("GET", f"/volumes/{ref}").json()
    show(data if fmt == "json" else _volume_rows(data), fmt, VOLUME_COLS)


@volume_app.command("create")
def volume_create(
    name: str,
    size_gib: Annotated[int | None, typer.Option(help="size in GiB")] = None,
    pool: str | None = None,
    offering: str | None = None,
    format: Annotated[str | None, typer.Option("--disk-format", help="qcow2 | raw")] = None,
    provisioning: Annotated[
        str | None, typer.Option(help="thin | thick | thick-lazy-zeroed")
    ] = None,
    secure_delete: Annotated[
        bool | None, typer.Option("--secure-delete/--no-secure-delete")
    ] = None,
    shareable: bool = False,
    snapshot: Annotated[
        str | None, typer.Option(help="a volume snapshot to copy the data from")
    ] = None,
    lun: Annotated[int | None, typer.Option(help="iscsi pools: the LUN to adopt")] = None,
    image: Annotated[
        str | None, typer.Option(help="an image whose disk the volume holds (bootable)")
    ] = None,
    wait: Wait = False,
    fmt: Fmt = "table",
) -> None:
    body = {
        "name": name,
        "size_gib": size_gib,
        "pool": pool,
        "offering": offering,
        "format": format,
        "provisioning": provisioning,
        "secure_delete": secure_delete,
        "shareable": shareable,
        "snapshot": snapshot,
        "lun": lun,
        "image": image,
    }
    created = request("POST", "/volumes", json=body).json()
    if wait:
        wait_for_task(created["task_id"])
        created = request("GET", f"/volumes/{created['id']}").json()
    show(_volume_rows(created), fmt, VOLUME_COLS)


@volume_app.command("upload")
def volume_upload(
    path: Path,
    name: Annotated[str, typer.Option(help="the new volume's name")],
    pool: str | None = None,
    offering: str | None = None,
    secure_delete: Annotated[
        bool | None, typer.Option("--secure-delete/--no-secure-delete")
    ] = None,
    shareable: bool = False,
    fmt: Fmt = "table",
) -> None:
    """Upload a qcow2 or raw disk image as a new volume (streamed to its host)."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    params: dict[str, object] = {"name": name, "shareable": shareable}
    for key, value in (("pool", pool), ("offering", offering), ("secure_delete", secure_delete)):
        if value is not None:
            params[key] = value
    show(_volume_rows(upload_file(path, "/volumes/upload", params).json()), fmt, VOLUME_COLS)


@volume_app.command("download")
def volume_download(
    ref: str, output: Annotated[Path, typer.Option("-o", "--output", help="file to write")]
) -> None:
    """Download a volume's file (qcow2 or raw, as stored) from its host."""
    size = download_file(f"/volumes/{ref}/download", output)
    console.print(f"volume {ref}: {size} bytes written to {output}")


@volume_app.command("create-template")
def volume_create_template(
    ref: str,
    name: Annotated[str, typer.Option(help="the new image's name")],
    wait: Wait = False,
) -> None:
    """Make an image of the volume (no running instance may use it)."""
    task = request("POST", f"/volumes/{ref}/actions/create-template", json={"name": name}).json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"image {name} from volume {ref}: {'done' if wait else 'accepted'}")


@volume_app.command("delete")
def volume_delete(ref: str, wait: Wait = False) -> None:
    task = request("DELETE", f"/volumes/{ref}").json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"volume {ref}: delete {'done' if wait else 'accepted'}")


@volume_app.command("extend")
def volume_extend(ref: str, size_gib: int, wait: Wait = False) -> None:
    task = request("POST", f"/volumes/{ref}/actions/extend", json={"size_gib": size_gib}).json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"volume {ref}: extend to {size_gib} GiB {'done' if wait else 'accepted'}")


@volume_app.command("migrate")
def volume_migrate(
    ref: str,
    pool: Annotated[str, typer.Option(help="the storage pool it moves to")],
    max_bandwidth_mib_s: Annotated[
        int | None, typer.Option(help="limit a live copy to this many MiB/s")
    ] = None,
    wait: Wait = False,
) -> None:
    """Move the volume to another pool (live, when a running instance uses it)."""
    body = {"pool": pool, "max_bandwidth_mib_s": max_bandwidth_mib_s}
    task = request("POST", f"/volumes/{ref}/actions/migrate", json=body).json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"volume {ref}: move to pool {pool} {'done' if wait else 'accepted'}")


@volume_app.command("attach")
def volume_attach(
    ref: str,
    instance: Annotated[str, typer.Option(help="the instance to attach to")],
    mode: Annotated[str, typer.Option(help="persistent | nonpersistent")] = "persistent",
    wait: Wait = False,
) -> None:
    out = request(
        "POST", f"/instances/{instance}/volumes", json={"volume": ref, "mode": mode}
    ).json()
    if wait:
        wait_for_task(out["task_id"])
    console.print(f"volume {ref} -> {instance} as {out['target']} (serial {out['serial']})")


@volume_app.command("detach")
def volume_detach(
    ref: str,
    instance: Annotated[str, typer.Option(help="the instance to detach from")],
    wait: Wait = False,
) -> None:
    task = request("DELETE", f"/instances/{instance}/volumes/{ref}").json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"volume {ref}: detach from {instance} {'done' if wait else 'accepted'}")


snapshot_app = typer.Typer(help="Instance snapshots", no_args_is_help=True)
SNAPSHOT_COLS = ["name", "memory", "status", "task_state", "created_at", "id"]
Instance = Annotated[str, typer.Option("--instance", "-i", help="the instance")]


@snapshot_app.command("list")
def snapshot_list(instance: Instance, fmt: Fmt = "table") -> None:
    show(request("GET", f"/instances/{instance}/snapshots").json(), fmt, SNAPSHOT_COLS)


@snapshot_app.command("create")
def snapshot_create(name: str, instance: Instance, wait: Wait = False) -> None:
    """Snapshot every disk of the instance (and its memory when it runs)."""
    out = request("POST", f"/instances/{instance}/snapshots", json={"name": name}).json()
    if wait:
        wait_for_task(out["task_id"])
    console.print(f"snapshot {name} of {instance}: {'done' if wait else 'accepted'}")


@snapshot_app.command("revert")
def snapshot_revert(name: str, instance: Instance, wait: Wait = False) -> None:
    task = request("POST", f"/instances/{instance}/snapshots/{name}/actions/revert").json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"{instance} reverted to {name}" if wait else "revert: accepted")


@snapshot_app.command("delete")
def snapshot_delete(name: str, instance: Instance, wait: Wait = False) -> None:
    task = request("DELETE", f"/instances/{instance}/snapshots/{name}").json()
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"snapshot {name}: delete {'done' if wait else 'accepted'}")


volume_snapshot_app = typer.Typer(help="Volume snapshots (copies of one volume)")
volume_app.add_typer(volume_snapshot_app, name="snapshot", no_args_is_help=True)
VOLUME_SNAPSHOT_COLS = ["name", "size_gib", "status", "task_state", "created_at", "id"]


def _done(task: dict, wait: bool, what: str) -> None:
    if wait:
        wait_for_task(task["task_id"])
    console.print(f"{what}: {'done' if wait else 'accepted'}")


@volume_snapshot_app.command("list")
def volume_snapshot_list(volume: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/volumes/{volume}/snapshots").json(), fmt, VOLUME_SNAPSHOT_COLS)


@volume_snapshot_app.command("create")
def volume_snapshot_create(volume: str, name: str, wait: Wait = False) -> None:
    """Copy the volume as it is now (a running instance using it runs on)."""
    out = request("POST", f"/volumes/{volume}/snapshots", json={"name": name}).json()
    _done(out, wait, f"snapshot {name} of volume {volume}")


@volume_snapshot_app.command("revert")
def volume_snapshot_revert(volume: str, name: str, wait: Wait = False) -> None:
    """Replace the volume's data with the snapshot's (no running instance may use it)."""
    task = request("POST", f"/volumes/{volume}/snapshots/{name}/actions/revert").json()
    _done(task, wait, f"volume {volume} reverted to {name}")


@volume_snapshot_app.command("delete")
def volume_snapshot_delete(volume: str, name: str, wait: Wait = False) -> None:
    task = request("DELETE", f"/volumes/{volume}/snapshots/{name}").json()
    _done(task, wait, f"snapshot {name}: delete")
