"""Hosts, zones and clusters, and their capacity."""
