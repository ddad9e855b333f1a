from importlib.metadata import PackageNotFoundError, version


def dicomflow_version() -> str:
    try:
        return f"dicomflow {version('dicomflow')}"
    except PackageNotFoundError:
        return "dicomflow (not installed)"
