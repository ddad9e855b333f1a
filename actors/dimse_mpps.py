"""MPPS SCP (Modality Performed Procedure Step, N-CREATE and N-SET): the step is recorded per
tenant, its worklist item follows its status, and the study's workflow (when running) shows it
in the Temporal UI."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET

from actors.dimse_status import status
from archive.audit import AuditAction
from archive.audit import Outcome as AuditOutcome
from archive.dicom import dicom_status as st
from archive.dicom.uids import is_valid_uid
from archive.identity.ae_rules import Caller
from archive.index import procedure_steps
from archive.services.mpps import PerformedStep, StepRefused, changed, started
from contract import names

if TYPE_CHECKING:
    from actors.dimse_context import DimseContext

log = logging.getLogger("dicomflow.scp.mpps")

MPPS = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step SOP Class


class MppsService:
    def __init__(self, ctx: DimseContext) -> None:
        self.ctx = ctx

    def on_n_create(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        allowed = self.ctx.gate.allowed(event, "mpps")
        if isinstance(allowed, Dataset):
            return allowed, None
        association, tenant = allowed
        mpps_uid = str(cast(N_CREATE, event.request).AffectedSOPInstanceUID or "")
        if str(event.request.AffectedSOPClassUID) != MPPS:
            return status(0x0122, "only MPPS is created here"), None
        if not is_valid_uid(mpps_uid):
            return status(st.MISSING_ATTRIBUTE, "the N-CREATE needs a valid Affected SOP Instance UID"), None
        try:
            step = started(event.attribute_list)
            self.ctx.loop.run(procedure_steps.create(self.ctx.pool, tenant, mpps_uid, step), timeout=30)
        except StepRefused as err:
            return status(err.status, str(err)), None
        except procedure_steps.StepExists:
            return status(st.DUPLICATE_SOP_INSTANCE, "this performed procedure step exists; use N-SET"), None
        self._after(association.caller, tenant, mpps_uid, step)
        return status(st.SUCCESS), None

    def on_n_set(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        allowed = self.ctx.gate.allowed(event, "mpps")
        if isinstance(allowed, Dataset):
            return allowed, None
        association, tenant = allowed
        mpps_uid = str(cast(N_SET, event.request).RequestedSOPInstanceUID or "")
        pool, loop = self.ctx.pool, self.ctx.loop
        stored = loop.run(procedure_steps.load(pool, tenant, mpps_uid), timeout=30)
        if stored is None:
            return status(st.NO_SUCH_OBJECT_INSTANCE, "no such performed procedure step"), None
        try:
            step = changed(Dataset.from_json(stored), event.modification_list)
            loop.run(procedure_steps.update(pool, tenant, mpps_uid, step), timeout=30)
        except StepRefused as err:
            return status(err.status, str(err)), None
        self._after(association.caller, tenant, mpps_uid, step)
        return status(st.SUCCESS), None

    def _after(self, caller: Caller, tenant: str, mpps_uid: str, step: PerformedStep) -> None:
        self.ctx.gate.audit(
            caller, AuditAction.PROCEDURE_STEP, AuditOutcome.SUCCESS, tenant, step.study_uid, mpps=mpps_uid, status=step.status
        )
        if step.study_uid:
            self.ctx.loop.submit(self._tell_study(tenant, step.study_uid, step.status))

    async def _tell_study(self, tenant: str, study_uid: str, status: str) -> None:
        """The running study workflow shows the step; a study not (or no longer) running has no one to tell."""
        try:
            client = await self.ctx.temporal_client()
            await client.get_workflow_handle(names.study_workflow_id(tenant, study_uid)).signal(
                names.PROCEDURE_STEP_SIGNAL, status
            )
        except Exception as err:  # noqa: BLE001 - the index holds the status either way
            log.debug("study %s not told of its procedure step: %s", study_uid, err)
