"""Builder of ``nubis-tiny``: a ~10 MB bootable qcow2 made from this machine's parts.

A FAT "superfloppy" with syslinux boots under SeaBIOS; it carries the Debian
kernel and an initramfs of busybox-static whose init prints
``NUBIS-GUEST-READY`` on the serial console, asks DHCP for each NIC's address
(``NUBIS-IP eth0 10.0.0.5`` on the console), reads cloud-init's seed disc
(host name, keys, a user-data script: ``NUBIS-HOSTNAME web-1``), answers the ACPI power button
(graceful shutdown) and keeps a shell on the serial console and on tty1.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READY_MARKER = "NUBIS-GUEST-READY"
DISK_MIB = 32
# kernel modules the guest loads (dependencies are resolved from modules.dep)
GUEST_MODULES = (
    "button",
    "evdev",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "isofs",
    # the IDE CD-ROM drive every instance has: /dev/sr0
    "ata_piix",
    "sr_mod",
    # file systems on data volumes (busybox's mke2fs makes ext2, which ext4 mounts;
    # ext4 wants the crc32c checksum whatever the file system)
    "crc32c_generic",
    "ext4",
)

INITTAB = """\
::sysinit:/etc/rc
::respawn:/bin/acpid -f -l /dev/null -a /etc/acpid.conf
::respawn:/etc/uptime.sh
ttyS0::respawn:-/bin/sh
tty1::respawn:-/bin/sh
::ctrlaltdel:/bin/poweroff
::shutdown:/bin/echo NUBIS-GUEST-SHUTDOWN
"""

RC = f"""\
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
hostname nubis-guest
ip link set lo up
/etc/seed.sh
# every NIC asks DHCP for its address, in the background (the guest does not wait)
for dev in /sys/class/net/eth*; do
  [ -e "$dev" ] && udhcpc -f -i "${{dev##*/}}" -s /etc/udhcpc.sh -T 1 -A 2 -O mtu >/dev/null 2>&1 &
done
# acpid (from inittab) needs the power button's event device, added asynchronously
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/input/event0 ] && break; sleep 0.2; done
echo {READY_MARKER} > /dev/ttyS0
"""

# what cloud-init does with its seed disc, in the small: find the disc (NoCloud "cidata"
# or ConfigDrive "config-2") on a CD-ROM drive, take the host name and public keys,
# and run a user-data script in the background, its output on the serial console
SEED_SH = """\
#!/bin/sh
mkdir -p /seed
for dev in /dev/sr0 /dev/sr1 /dev/sr2 /dev/sr3; do
  [ -b "$dev" ] && mount -t iso9660 -o ro "$dev" /seed 2>/dev/null || continue
  [ -f /seed/meta-data ] || [ -f /seed/openstack/latest/meta_data.json ] && break
  umount /seed
done
if [ -f /seed/meta-data ]; then
  meta=/seed/meta-data; user=/seed/user-data
  name=$(sed -n 's/^local-hostname: *//p' $meta | tr -d "'\\"")
elif [ -f /seed/openstack/latest/meta_data.json ]; then
  meta=/seed/openstack/latest/meta_data.json; user=/seed/openstack/latest/user_data
  name=$(sed -n 's/^ *"hostname": *"\\([^"]*\\)".*/\\1/p' $meta)
else
  exit 0
fi
[ -n "$name" ] && hostname "$name"
echo "NUBIS-HOSTNAME $(hostname)" > /dev/ttyS0
mkdir -p /root/.ssh
grep -o 'ssh-[a-z0-9-]* [A-Za-z0-9+/=]*' $meta | sort -u > /root/.ssh/authorized_keys
while read -r key; do echo "NUBIS-SSH-KEY $key" > /dev/ttyS0; done < /root/.ssh/authorized_keys
if [ -f "$user" ] && [ "$(head -c 2 $user)" = "#!" ]; then
  cp $user /tmp/user-data && chmod 755 /tmp/user-data
  ( /tmp/user-data; echo "NUBIS-USER-DATA-EXIT $?" ) > /dev/ttyS0 2>&1 &
fi
"""

# the guest's uptime on the serial console: a live migration must not reset it
UPTIME_SH = """\
#!/bin/sh
while sleep 5; do echo "NUBIS-UPTIME $(cut -d. -f1 /proc/uptime)" > /dev/ttyS0; done
"""

# udhcpc's hook: configure the address (and MTU, name servers) it got, and say so on
# the serial console
UDHCPC_SH = """\
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "$subnet" up
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    if [ -n "$dns" ]; then
      for d in $dns; do echo "nameserver $d"; done > /etc/resolv.conf
    fi
    echo "NUBIS-IP $interface $ip" > /dev/ttyS0 ;;
esac
"""

POWER_SH = """\
#!/bin/sh
echo "ACPI power button: shutting down" > /dev/ttyS0
kill -USR2 1
"""

BOOT_CFG = """\
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=tty0 console=ttyS0,115200 panic=10
"""


ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")


class BuildError(RuntimeError):
    pass


def _run(*cmd: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise BuildError(f"{cmd[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def find_kernel() -> tuple[Path, str]:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("no kernel in /boot (install linux-image-amd64)")
    kernel = kernels[-1]
    return kernel, kernel.name.removeprefix("vmlinuz-")


def module_load_order(release: str, wanted: tuple[str, ...]) -> list[Path]:
    """Module files for ``wanted`` and their dependencies, dependencies first."""
    moddir = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[Path(target).name.split(".ko")[0]] = [Path(d).name for d in rest.split()]
    paths = {
        Path(line.partition(":")[0]).name.split(".ko")[0]: moddir / line.partition(":")[0]
        for line in (moddir / "modules.dep").read_text().splitlines()
    }
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name not in deps:
            return
        for dep in reversed(deps[name]):
            visit(dep.split(".ko")[0])
        order.append(name)

    for name in wanted:
        visit(name)
    return [paths[n] for n in order]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_initramfs(work: Path, release: str) -> Path:
    root = work / "initramfs"
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc/acpi", "lib/modules", "var/run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in _run(busybox, "--list").decode().split():
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "init").symlink_to("bin/busybox")
    _write(root / "etc/inittab", INITTAB)
    _write(root / "etc/rc", RC, 0o755)
    _write(root / "etc/acpid.conf", "PWRF power.sh\n")
    _write(root / "etc/acpi/power.sh", POWER_SH, 0o755)
    _write(root / "etc/uptime.sh", UPTIME_SH, 0o755)
    _write(root / "etc/udhcpc.sh", UDHCPC_SH, 0o755)
    _write(root / "etc/seed.sh", SEED_SH, 0o755)
    modules = module_load_order(release, GUEST_MODULES)
    for mod in modules:
        shutil.copy2(mod, root / "lib/modules" / mod.name)
    _write(root / "etc/modules.order", "\n".join(m.name.removesuffix(".ko") for m in modules))
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = _run("busybox", "cpio", "-o", "-H", "newc", cwd=root, stdin="\n".join(files).encode())
    out = work / "initrd.gz"
    out.write_bytes(gzip.compress(archive, compresslevel=9))
    return out


@contextmanager
def _atomic(dest: Path) -> Iterator[Path]:
    """A path to write ``dest`` to; it becomes ``dest`` only if the block succeeds."""
    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def build_tiny_image(dest: Path) -> Path:
    """Build the bootable qcow2 at ``dest`` (atomically: a partial file is never left)."""
    kernel, release = find_kernel()
    with tempfile.TemporaryDirectory(prefix="nubis-tiny-") as tmp:
        work = Path(tmp)
        initrd = build_initramfs(work, release)
        raw = work / "tiny.raw"
        with open(raw, "wb") as fh:
            fh.truncate(DISK_MIB * 1024 * 1024)
        _run("mkfs.vfat", "-n", "NUBISTINY", raw)
        _run("syslinux", "--install", raw)
        cfg = work / "syslinux.cfg"
        cfg.write_text(BOOT_CFG)
        for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.gz"), (cfg, "syslinux.cfg")):
            _run("mcopy", "-i", raw, src, f"::{name}")
        with _atomic(dest) as partial:
            _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, partial)
    return dest


def build_tiny_iso(dest: Path, extra: dict[str, Path] | None = None) -> Path:
    """The same guest as a bootable ISO 9660 image (isolinux, El Torito); ``extra``
    files are added at the given paths (an installer's payload, for instance)."""
    kernel, release = find_kernel()
    with tempfile.TemporaryDirectory(prefix="nubis-tiny-iso-") as tmp:
        work = Path(tmp)
        initrd = build_initramfs(work, release)
        root = work / "iso"
        (root / "isolinux").mkdir(parents=True)
        shutil.copy2(ISOLINUX_BIN, root / "isolinux/isolinux.bin")
        shutil.copy2(LDLINUX_C32, root / "isolinux/ldlinux.c32")
        (root / "isolinux/isolinux.cfg").write_text(BOOT_CFG)
        shutil.copy2(kernel, root / "vmlinuz")
        shutil.copy2(initrd, root / "initrd.gz")
        for name, source in (extra or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
        partial = dest.with_name(dest.name + ".partial")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _run(
            "genisoimage",
            "-quiet",
            "-o",
            partial,
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-J",
            "-R",
            "-V",
            "NUBISTINY",
            root,
        )
        os.replace(partial, dest)
    return dest
