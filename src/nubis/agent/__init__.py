"""The host network agent: what Nubis needs of a host that libvirt does not do (the
overlay networks' VXLAN devices and forwarding tables)."""

DEFAULT_PORT = 16600
