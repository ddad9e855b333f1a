"""Storage lifecycle: rules that compress (lossless) or delete (retention) studies once they are old
enough, skipping studies on hold; applied by Temporal workflows (workflows/lifecycle.py)."""
