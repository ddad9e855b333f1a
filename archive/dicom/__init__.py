"""DICOM format know-how: reading headers and Part 10 files, the DICOM JSON model, attribute extraction, UIDs, statuses."""
