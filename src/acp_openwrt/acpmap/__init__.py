"""The ACP at a glance: every node's report gathered over the ACP GRASP into one map
(docs/acpmap.md)."""
