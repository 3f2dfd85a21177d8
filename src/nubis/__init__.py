"""Nubis: a private-cloud IaaS manager for libvirt/QEMU hosts."""

__version__ = "0.1.0"
