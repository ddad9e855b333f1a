"""An HL7 ADT order (actors/hl7_adt.py) taken in: recorded once by its message control ID, so a
message sent again is acknowledged and not applied twice, then handed to an UpdateWorkflow."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from archive.index import updates
from contract.payloads import UpdateRequest
from contract.starts import start_update


class AdtRefused(Exception):
    pass


async def take_adt(
    pool: AsyncConnectionPool,
    client: Client,
    task_queue: str,
    tenant: str,
    facility: str,
    event: str,
    control_id: str,
    patient_id: str,
    changes: dict[str, str],
) -> bool:
    """Start the order's workflow; False when this message was taken before. AdtRefused for a merge
    into a patient known only in another tenant (the wall between tenants holds)."""
    surviving = changes.get("PatientID")
    if event == "A40" and surviving:
        elsewhere = await updates.patient_only_elsewhere(pool, tenant, surviving)
        if elsewhere:
            raise AdtRefused(f"patient {surviving} belongs to another tenant; a merge cannot move studies there")
    op_id = f"hl7:{facility}:{control_id}"
    request = UpdateRequest(tenant, op_id, event, changes, patient_id=patient_id)
    record = {"facility": facility, "event": event, "control_id": control_id, "patient_id": patient_id, "changes": changes}
    if not await updates.create_operation(pool, op_id, tenant, event, record, f"hl7:{facility}"):
        return False
    try:
        await start_update(client, task_queue, request)
    except BaseException:
        await updates.forget_operation(pool, op_id)  # not applied: the sender's retry must be taken
        raise
    return True
