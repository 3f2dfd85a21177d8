"""Disks: storage pools, volumes and their tasks, volume snapshots, transfers
(upload/download), images."""
