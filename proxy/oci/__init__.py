"""Value types and rules of the OCI distribution and image specs. No I/O here."""
