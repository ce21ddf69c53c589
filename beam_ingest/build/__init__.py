"""The pure build: numpy in, numpy out; no Beam, no Bigtable."""
