"""Reports: text tables, deltas and figures made from run records."""
