"""Errors every driver raises; callers never see a libvirt exception."""


class DriverError(Exception):
    """A hypervisor or storage operation failed."""


class NotFound(DriverError):
    """The domain, pool or volume does not exist."""


class HostUnreachable(DriverError):
    """The host's libvirtd cannot be reached (or refused our credentials)."""


class Unsupported(DriverError):
    """The host cannot do what was asked (e.g. its kernel lacks a feature)."""


class UnsafeImage(DriverError):
    """A disk file's header makes QEMU open something Nubis did not put there (a
    backing file or data file a guest or uploader named): the operation is refused."""
