"""Search attributes that make the Temporal UI useful to an operator (no patient data in them)."""

from temporalio.common import SearchAttributeKey

TENANT = SearchAttributeKey.for_keyword("DicomflowTenant")
MODALITY = SearchAttributeKey.for_keyword("DicomflowModality")
INSTANCE_COUNT = SearchAttributeKey.for_int("DicomflowInstanceCount")
STATE = SearchAttributeKey.for_keyword("DicomflowState")
PROCEDURE_STEP = SearchAttributeKey.for_keyword("DicomflowProcedureStep")  # MPPS: IN PROGRESS, COMPLETED, ...

# as `temporal server start-dev --search-attribute NAME=TYPE` wants them
SEARCH_ATTRIBUTE_TYPES = {
    TENANT.name: "Keyword",
    MODALITY.name: "Keyword",
    INSTANCE_COUNT.name: "Int",
    STATE.name: "Keyword",
    PROCEDURE_STEP.name: "Keyword",
}
