"""lrsweep, the library: the search for a learning rate, knowing neither Hydra nor lrsweep's own
training loop. The Hydra sweeper (`hydra_plugins/lrsweep_sweeper`) and the Python API are thin
adapters over it; `src/` (lrsweep's built-in trial) is one application among others."""
