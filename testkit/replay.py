"""Replaying real workflow histories in Temporal's sandboxed Replayer: the worker runs workflows
unsandboxed for speed, so a forbidden import or a non-deterministic call in workflow code is caught
here, on histories the real server recorded."""

from __future__ import annotations

from temporalio.worker import Replayer

from archive.config.settings import Settings
from testkit.temporal_waits import client_for


async def replay_all(settings: Settings, query: str, workflows: list[type], limit: int = 10) -> int:
    """Replay up to `limit` closed workflows matching the visibility `query`; how many."""
    client = await client_for(settings)
    replayer = Replayer(workflows=workflows)  # sandboxed by default
    replayed = 0
    async for execution in client.list_workflows(query):
        if replayed >= limit:
            break
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        await replayer.replay_workflow(history)  # raises on any mismatch
        replayed += 1
    return replayed
