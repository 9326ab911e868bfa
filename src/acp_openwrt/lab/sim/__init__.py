"""`acp-lab sim`: a discrete-event simulation of an ACP of N nodes in one process, driven by the
project's real sans-I/O protocol cores (net.py says which, and what is a delay model)."""
