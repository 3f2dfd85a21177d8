"""High availability: the host health monitor and the failover / restart-in-place task handlers."""
