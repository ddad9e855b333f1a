"""What the tests and the benchmarks share: a real dicomflow stack run as `dicomflow up` in a
subprocess, waits on Temporal workflows, and a real OIDC token issuer on loopback. It is not
shipped (not in the wheel) and imports only from `archive/`, never from `tests/`."""
