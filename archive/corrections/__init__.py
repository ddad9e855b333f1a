"""Corrections to what is stored: patient and study attribute updates, patient merges and
identifier changes (IHE PIR), as new versions of the objects (archive/corrections/rewrite.py)."""
