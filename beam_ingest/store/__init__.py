"""Table schema, cell encodings, the meta pickle, and the Bigtable admin and sink."""
