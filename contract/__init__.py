"""The Temporal contract: what the archive's workflows and everything that starts, signals,
runs or watches them agree on, in one place both sides import.

- `names`: workflow and activity names, workflow ids, signal names.
- `payloads`: the dataclasses that cross the boundary (arguments, signals, results). Plain data:
  workflows import them inside the sandbox, so nothing here may pull in pydicom or do I/O.
- `search_attributes`: what an operator filters by in the Temporal Web UI (no patient data).

A new workflow (forwarding, corrections, lifecycle, migration) adds its names and payloads here
first; renaming anything here breaks running workflows' replay, so names only ever get added.
"""
