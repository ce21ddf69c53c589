"""Readers (and writers, for the synthetic generator) of the ingest's input formats."""
