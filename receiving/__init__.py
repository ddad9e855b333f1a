"""The receiving side of ingest, shared by the DIMSE SCP (actors/) and STOW-RS (serve/): receipt
in the archive, then buffered signal-with-start of each study's workflow, then the outbox mark.

It sits between the protocol layers and the archive: it may import `archive/` and the names in
`contract.names`, and it starts workflows by name, so `workflows/` stays free of I/O.
"""
