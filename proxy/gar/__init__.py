"""Artifact Registry's own REST API (repository metadata), beside the registry protocol."""
