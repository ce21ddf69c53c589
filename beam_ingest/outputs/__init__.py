"""The files a run writes beside the table (EDGES, COMPONENTS, WATERSHED, SV_MAP)."""
