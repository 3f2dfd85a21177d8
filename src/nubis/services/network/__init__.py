"""Networks, ports and addresses (IPAM), bandwidth limits (QoS), security groups."""
