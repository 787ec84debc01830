"""Benchmarks. Run from the repo root, e.g. `.venv/bin/python bench/ingest.py`."""
