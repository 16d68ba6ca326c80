"""The local cache: content-addressed blob files, their SQLite index, single-flight fills."""
