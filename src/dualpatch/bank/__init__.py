"""Memory banks: greedy k-center coresets, nearest-neighbour search, the feature cache,
and the on-disk feature store and spill that let a fit exceed memory (layer 3)."""
