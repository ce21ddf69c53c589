"""Operator tools beside the ingest: verify a table, report a run, estimate a build, start a
local Bigtable emulator."""
