"""Routing: sending what the archive holds onward (forwarding rules), matched with the same query
rules QIDO-RS and C-FIND use."""
