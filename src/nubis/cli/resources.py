"""CLI commands for hosts, images, flavors and instances."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli.client import (
    console,
    download_file,
    read_text,
    request,
    show,
    upload_file,
    wait_for_task,
)

Fmt = Annotated[str, typer.Option("-f", "--format", help="table or json")]
Wait = Annotated[bool, typer.Option("--wait", help="follow the task until it ends")]

host_app = typer.Typer(help="Hosts (libvirt servers)", no_args_is_help=True)
image_app = typer.Typer(help="Images", no_args_is_help=True)
flavor_app = typer.Typer(help="Flavors", no_args_is_help=True)
instance_app = typer.Typer(help="Instances (VMs)", no_args_is_help=True)
task_app = typer.Typer(help="Tasks (long operations)", no_args_is_help=True)

HOST_COLS = ["name", "uri", "state", "virt_type", "cpus", "memory_mib", "id"]
IMAGE_COLS = ["name", "status", "disk_format", "virtual_size", "size", "id"]
FLAVOR_COLS = ["name", "vcpus", "memory_mib", "disk_gib", "root_pool_id", "id"]
INSTANCE_COLS = ["name", "status", "task_state", "vcpus", "memory_mib", "id"]


@host_app.command("add")
def host_add(
    name: str,
    uri: str,
    username: str | None = None,
    password: Annotated[str | None, typer.Option(envvar="NUBIS_HOST_PASSWORD")] = None,
    virt_type: str | None = None,
    fmt: Fmt = "table",
) -> None:
    """Register a libvirt host by URI (qemu:///system, qemu+tcp://..., qemu+ssh://...)."""
    body = {
        "name": name,
        "uri": uri,
        "username": username,
        "password": password,
        "virt_type": virt_type,
    }
    show(request("POST", "/hosts", json=body).json(), fmt, HOST_COLS)


@host_app.command("list")
def host_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/hosts").json(), fmt, HOST_COLS)


@image_app.command("import")
def image_import(path: Path, name: str, fmt: Fmt = "table") -> None:
    """Upload a local qcow2/raw/ISO file as an image (streamed)."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    show(upload_file(path, "/images", {"name": name}).json(), fmt, IMAGE_COLS)


@image_app.command("download")
def image_download(
    ref: str, output: Annotated[Path, typer.Option("-o", "--output", help="file to write")]
) -> None:
    """Download an image's file from the image store."""
    size = download_file(f"/images/{ref}/file", output)
    console.print(f"image {ref}: {size} bytes written to {output}")


@image_app.command("list")
def image_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/images").json(), fmt, IMAGE_COLS)


@image_app.command("delete")
def image_delete(ref: str) -> None:
    """Delete an image (refused while an instance uses it)."""
    request("DELETE", f"/images/{ref}")
    console.print(f"image {ref} deleted")


@flavor_app.command("list")
def flavor_list(fmt: Fmt = "table") -> None:
    show(request("GET", "/flavors").json(), fmt, FLAVOR_COLS)


@flavor_app.command("create")
def flavor_create(
    name: str,
    vcpus: Annotated[int, typer.Option()],
    memory_mib: Annotated[int, typer.Option()],
    disk_gib: Annotated[int, typer.Option(help="root disk size")],
    root_pool: Annotated[
        str | None,
        typer.Option(help="storage pool of its instances' root disks (default: the cluster's)"),
    ] = None,
    fmt: Fmt = "table",
) -> None:
    """A flavor (system administrators)."""
    body = {
        "name": name,
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "disk_gib": disk_gib,
        "root_pool": root_pool,
    }
    show(request("POST", "/flavors", json=body).json(), fmt, FLAVOR_COLS)


@flavor_app.command("delete")
def flavor_delete(ref: str) -> None:
    """Delete a flavor (refused while an instance uses it)."""
    request("DELETE", f"/flavors/{ref}")
    console.print(f"flavor {ref} deleted")


@instance_app.command("create")
def instance_create(
    name: str,
    image: Annotated[str, typer.Option(help="image id or name")],
    flavor: Annotated[str, typer.Option(help="flavor id or name")],
    host: Annotated[str | None, typer.Option(help="host id or name")] = None,
    cluster: Annotated[str | None, typer.Option(help="place inside this cluster")] = None,
    rule_group: Annotated[str | None, typer.Option(help="rule group id or name")] = None,
    clone: Annotated[
        str, typer.Option(help="root disk: linked (overlay of the image) or full (a copy)")
    ] = "linked",
    network: Annotated[
        list[str] | None,
        typer.Option(
            help="a NIC on NETWORK or NETWORK=IP (repeatable, eth0 first; none given: the "
            "project's network 'default' if it has one; 'none': no NIC)"
        ),
    ] = None,
    security_group: Annotated[
        list[str] | None,
        typer.Option(help="security group of every NIC (repeatable; default: 'default')"),
    ] = None,
    key_pair: Annotated[
        str | None, typer.Option(help="key pair whose public key the guest gets")
    ] = None,
    user_data: Annotated[
        Path | None,
        typer.Option(help="file of cloud-init user-data ('#!' script or '#cloud-config')"),
    ] = None,
    hostname: Annotated[
        str | None, typer.Option(help="the guest's host name (default: from the name)")
    ] = None,
    seed_format: Annotated[
        str, typer.Option(help="cloud-init seed disc: nocloud, configdrive or none")
    ] = "nocloud",
    ha: Annotated[bool, typer.Option(help="restart it when its host or QEMU fails")] = False,
    ha_priority: Annotated[int, typer.Option(help="0-1000: higher ones restart first")] = 0,
    prop: Annotated[
        list[str] | None, typer.Option("--property", help="KEY=VALUE of your own (repeatable)")
    ] = None,
    root_pool: Annotated[
        str | None,
        typer.Option(help="a storage pool for the root disk (a volume, deleted with it)"),
    ] = None,
    root_offering: Annotated[
        str | None,
        typer.Option(help="a disk offering whose tags pick the root disk's storage pool"),
    ] = None,
    wait: Wait = False,
    fmt: Fmt = "table",
) -> None:
    nics: list[dict] | None = None if not network else []
    for nic in network or []:
        if nic == "none":
            continue
        net, _, ip = nic.partition("=")
        assert nics is not None
        nics.append({"network": net, "ip": ip or None, "security_groups": security_group})
    body = {
        "name": name,
        "image": image,
        "flavor": flavor,
        "host": host,
        "cluster": cluster,
        "rule_group": rule_group,
        "clone": clone,
        "networks": nics,
        "key_pair": key_pair,
        "user_data": read_text(user_data) if user_data else None,
        "hostname": hostname,
        "seed_format": seed_format,
        "ha": ha,
        "ha_priority": ha_priority,
        "properties": key_values(prop or []),
        "root_pool": root_pool,
        "root_offering": root_offering,
    }
    created = request("POST", "/instances", json=body).json()
    if wait:
        wait_for_task(created["task_id"])
        created = request("GET", f"/instances/{created['id']}").json()
    show(created, fmt, INSTANCE_COLS)


def key_values(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r}: give KEY=VALUE")
        out[key] = value
    return out


@instance_app.command("properties")
def instance_properties(
    ref: str,
    prop: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE to set (repeatable)")
    ] = None,
    unset: Annotated[list[str] | None, typer.Option(help="KEY to remove (repeatable)")] = None,
    fmt: Fmt = "table",
) -> None:
    """Show, set or remove the instance's own key-value pairs."""
    current = request("GET", f"/instances/{ref}").json()
    if prop or unset:
        wanted = {**current["properties"], **key_values(prop or [])}
        for key in unset or []:
            wanted.pop(key, None)
        current = request("PUT", f"/instances/{ref}/properties", json=wanted).json()
    rows = [{"key": k, "value": v} for k, v in sorted(current["properties"].items())]
    show(rows, fmt, ["key", "value"])


@instance_app.command("ports")
def instance_ports(ref: str, fmt: Fmt = "table") -> None:
    """The instance's NICs: MAC and IP of each, eth0 first."""
    cols = ["position", "mac", "ip", "network_id", "status", "id"]
    show(request("GET", f"/instances/{ref}/ports").json(), fmt, cols)


@instance_app.command("migrate")
def instance_migrate(
    ref: str,
    host: Annotated[str | None, typer.Option(help="target host (default: the scheduler's)")] = None,
    max_downtime_ms: Annotated[
        int | None, typer.Option(help="longest pause at the switch-over")
    ] = None,
    max_bandwidth: Annotated[
        int | None, typer.Option(help="cap on the migration stream, MiB/s")
    ] = None,
    wait: Wait = False,
) -> None:
    """Live-migrate a running instance (cold when stopped) within its cluster."""
    body: dict[str, object] = {"host": host}
    if max_downtime_ms is not None:
        body["max_downtime_ms"] = max_downtime_ms
    if max_bandwidth is not None:
        body["max_bandwidth_mib_s"] = max_bandwidth
    task = request("POST", f"/instances/{ref}/actions/migrate", json=body).json()
    if wait:
        wait_for_task(task["task_id"])
        console.print("migrated")
    else:
        console.print(f"migrate: accepted (task {task['task_id']})")


@instance_app.command("cancel-migration")
def instance_cancel_migration(ref: str) -> None:
    """Abort a live migration in flight: the instance stays where it was."""
    request("POST", f"/instances/{ref}/actions/cancel-migration")
    console.print("migration cancelled: the instance stays on its host")


@instance_app.command("list")
def instance_list(status: str | None = None, name: str | None = None, fmt: Fmt = "table") -> None:
    params = {k: v for k, v in {"status": status, "name": name}.items() if v}
    show(request("GET", "/instances", params=params).json(), fmt, INSTANCE_COLS)


@instance_app.command("show")
def instance_show(ref: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/instances/{ref}").json(), fmt, INSTANCE_COLS)


def _action(ref: str, action: str, wait: bool, body: dict[str, str] | None = None) -> None:
    task = request("POST", f"/instances/{ref}/actions/{action}", json=body).json()
    if wait:
        wait_for_task(task["task_id"])
        console.print(f"{action}: done")
    else:
        console.print(f"{action}: accepted (task {task['task_id']})")


@instance_app.command("start")
def instance_start(ref: str, wait: Wait = False) -> None:
    _action(ref, "start", wait)


@instance_app.command("stop")
def instance_stop(
    ref: str, force: Annotated[bool, typer.Option("--force")] = False, wait: Wait = False
) -> None:
    _action(ref, "force-stop" if force else "stop", wait)


@instance_app.command("reboot")
def instance_reboot(
    ref: str,
    hard: Annotated[bool, typer.Option("--hard", help="reset, without asking the guest")] = False,
    wait: Wait = False,
) -> None:
    _action(ref, "hard-reboot" if hard else "reboot", wait)


@instance_app.command("pause")
def instance_pause(ref: str, wait: Wait = False) -> None:
    _action(ref, "pause", wait)


@instance_app.command("suspend")
def instance_suspend(ref: str, wait: Wait = False) -> None:
    """Write the guest's memory to disk and end its QEMU; resume restores it."""
    _action(ref, "suspend", wait)


@instance_app.command("resume")
def instance_resume(ref: str, wait: Wait = False) -> None:
    """Go on with a paused or suspended instance."""
    _action(ref, "resume", wait)


@instance_app.command("resize")
def instance_resize(
    ref: str,
    flavor: Annotated[str, typer.Option(help="the new flavor, by id or name")],
    wait: Wait = False,
) -> None:
    """Give the instance another flavor (a running one is restarted); then
    resize-confirm or resize-revert."""
    _action(ref, "resize", wait, {"flavor": flavor})


@instance_app.command("resize-confirm")
def instance_resize_confirm(ref: str, wait: Wait = False) -> None:
    """Keep the new flavor."""
    _action(ref, "confirm-resize", wait)


@instance_app.command("resize-revert")
def instance_resize_revert(ref: str, wait: Wait = False) -> None:
    """Go back to the flavor (and root disk) from before the resize."""
    _action(ref, "revert-resize", wait)


@instance_app.command("delete")
def instance_delete(ref: str, wait: Wait = False) -> None:
    task = request("DELETE", f"/instances/{ref}").json()
    if wait:
        wait_for_task(task["task_id"])
        console.print("deleted")
    else:
        console.print(f"delete: accepted (task {task['task_id']})")


@instance_app.command("console-log")
def instance_console_log(ref: str, max_bytes: int = 65536) -> None:
    """Print the serial console output of an instance."""
    text = request("GET", f"/instances/{ref}/console-log", params={"max_bytes": max_bytes}).text
    console.out(text, highlight=False)


def _follow(task: dict, wait: bool, what: str) -> None:
    if wait:
        wait_for_task(task["task_id"])
        console.print(f"{what}: done")
    else:
        console.print(f"{what}: accepted (task {task['task_id']})")


@instance_app.command("clone")
def instance_clone(ref: str, name: str, wait: Wait = False, fmt: Fmt = "table") -> None:
    """A full clone of a stopped instance (its root disk copied; not its volumes)."""
    created = request("POST", f"/instances/{ref}/actions/clone", json={"name": name}).json()
    if wait:
        wait_for_task(created["task_id"])
        created = request("GET", f"/instances/{created['id']}").json()
    show(created, fmt, INSTANCE_COLS)


@instance_app.command("insert-iso")
def instance_insert_iso(
    ref: str, image: Annotated[str, typer.Option(help="ISO image id or name")], wait: Wait = False
) -> None:
    """Put an ISO image into the CD-ROM drive (live when the instance runs)."""
    _follow(request("PUT", f"/instances/{ref}/cdrom", json={"image": image}).json(), wait, "insert")


@instance_app.command("eject")
def instance_eject(ref: str, wait: Wait = False) -> None:
    """Empty the CD-ROM drive."""
    _follow(request("DELETE", f"/instances/{ref}/cdrom").json(), wait, "eject")


@instance_app.command("boot-order")
def instance_boot_order(
    ref: str,
    devices: Annotated[list[str], typer.Argument(help="disk and/or cdrom, first to last")],
    wait: Wait = False,
) -> None:
    """Set the boot order (from the next start), e.g. `boot-order vm1 disk cdrom`."""
    task = request("PUT", f"/instances/{ref}/boot-order", json={"order": devices}).json()
    _follow(task, wait, "boot order")


@task_app.command("show")
def task_show(task_id: str, fmt: Fmt = "table") -> None:
    show(request("GET", f"/tasks/{task_id}").json(), fmt, [])


@task_app.command("cancel")
def task_cancel(task_id: str, wait: Wait = False) -> None:
    """Ask a task (a volume move, say) to stop; it undoes what it did."""
    request("POST", f"/tasks/{task_id}/actions/cancel")
    if wait:
        task = request("GET", f"/tasks/{task_id}").json()
        while task["status"] in ("queued", "running"):
            time.sleep(0.5)
            task = request("GET", f"/tasks/{task_id}").json()
    console.print(f"task {task_id}: cancel {'done' if wait else 'requested'}")
