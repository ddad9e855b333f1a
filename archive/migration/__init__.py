"""Migration from a legacy archive over DIMSE Q/R: what to ask the source and how to read its
answers, and whether an AE-table entry can be migrated from. The SCU calls are in dimse/qr_scu.py,
the steps in activities/migration_steps.py, the progress rows in archive/index/migration_progress.py."""
