"""The archive's state and DICOM know-how. Imports no Ray, Temporal or FastAPI."""
