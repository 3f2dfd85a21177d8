"""Instances and everything done to them: lifecycle tasks, migration, resize, media,
console, snapshots, templates, cloud-init seeds, key pairs, flavors, NICs, state sync,
host drains."""
