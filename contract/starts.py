"""How a workflow of the contract is started or told of new work, for every starter alike (the
study workflow's routing step, the receiving side): one call, so the id, the signal and the
conflict rules cannot drift apart between them."""

from __future__ import annotations

from temporalio.client import Client

from contract import names
from contract.payloads import ForwardRequest


async def tell_forward(client: Client, task_queue: str, request: ForwardRequest) -> None:
    """Signal the study's forward for this rule that there may be more to send; start it if it is
    not running (signal-with-start: a forward that is sending takes the signal as another round)."""
    await client.start_workflow(
        names.FORWARD_WORKFLOW,
        request,
        id=names.forward_workflow_id(request.tenant, request.rule, request.study_uid),
        task_queue=task_queue,
        start_signal=names.FORWARD_SIGNAL,
    )
