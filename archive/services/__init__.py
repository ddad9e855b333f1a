"""The archive's domain services, one per concept: receipt, verification, storage commitment, worklist, MPPS, UPS, the orphan sweeper, what goes out on a retrieve."""
