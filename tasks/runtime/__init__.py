"""What every job stands on: files written atomically, checkpoints and weights read safely, the
launch folder and the Hydra job, the trainer with its logger and callbacks, data-parallel processes,
and the cost of a network (parameters, MACs, latency). Imports nothing else from ``tasks``."""
