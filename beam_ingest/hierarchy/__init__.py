"""The hierarchy algorithms (layer 2, parent layers, root ids): numpy in, numpy out; no Beam,
no Bigtable, no table format."""
