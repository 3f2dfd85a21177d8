"""Errors every driver raises; callers never see a libvirt exception."""


class DriverError(Exception):
    """A hypervisor or storage operation failed."""


class NotFound(DriverError):
    """The domain, pool or volume does not exist."""


class HostUnreachable(DriverError):
    """The host's libvirtd cannot be reached (or refused our credentials)."""
