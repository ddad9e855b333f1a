"""How an administrator cancels a forward (`DELETE /admin/forwarding/workflows/...`, `dicomflow
forward cancel`): a Temporal cancellation of `forward:{tenant}:{rule}:{StudyInstanceUID}`, which
the workflow handles (it withdraws its round, audits it and ends cancelled). One call for both
doors, so they cannot differ on the id or on what counts as running."""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from contract import names


class ForwardNotRunning(LookupError):
    """No forward of that id, or it has ended (`status`: how, as Temporal names it)."""

    def __init__(self, workflow_id: str, status: str | None) -> None:
        super().__init__(f"{workflow_id} is not running" + (f" ({status.lower()})" if status else ": no such forward"))
        self.workflow_id = workflow_id
        self.status = status


async def cancel_forward(client: Client, tenant: str, rule: str, study_uid: str) -> str:
    """Ask the running forward to stop; its workflow id. Returns once Temporal has the request:
    the workflow ends cancelled after closing its round."""
    workflow_id = names.forward_workflow_id(tenant, rule, study_uid)
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            raise ForwardNotRunning(workflow_id, described.status.name if described.status else None)
        await handle.cancel()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # none, or it ended between the two calls
            raise ForwardNotRunning(workflow_id, None) from None
        raise
    return workflow_id
