"""The OpenStack-compatible API: Keystone v3, Nova v2.1, Glance v2 and the parts of
Neutron and Cinder the standard clients need, served under ``/openstack``.

Every route here translates an OpenStack request into a call of the same services the
native API uses (and is allowed by the same policy entry), then translates the answer
back into the shape the OpenStack clients read. No business rule lives here.
"""
