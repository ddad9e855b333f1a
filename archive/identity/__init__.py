"""Who is asking and what they may do: principals, bearer-token verification, AE rules.

Plain models with no web framework or DICOM network library in them; `serve/` turns them into
FastAPI dependencies and `actors/` applies them at A-ASSOCIATE and per DIMSE service.
"""

from archive.identity.principal import ANONYMOUS, Principal, Role, TenantRefused

__all__ = ["ANONYMOUS", "Principal", "Role", "TenantRefused"]
