"""Settings (one typed object, from a file and DICOMFLOW_* variables), the embedded servers' secrets, TLS contexts."""
