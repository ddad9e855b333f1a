"""Pixels: every decode and encode runs in the decode pool (a worker process with memory and time limits); frames, rendering, transcoding, codestream checks."""
