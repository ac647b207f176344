"""One servicer per proto service: proto <-> domain translation, nothing else."""
