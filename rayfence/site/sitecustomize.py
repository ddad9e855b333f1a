"""Loaded by every Python process Ray starts on a node with a network address (cluster/ray_env.py
puts this folder on PYTHONPATH); it acts only in Ray's dashboard processes. See
rayfence/metrics_binding.py."""

from rayfence.metrics_binding import install_from_environment

install_from_environment()
