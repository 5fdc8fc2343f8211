"""lrsweep's Hydra sweeper (a grid on an Optuna study, each point run exactly once) and its
default launcher (jobs in this process, Hydra's per-job record at a fraction of its cost).

`hydra_plugins/` itself has no `__init__.py`: it is a namespace package shared with installed
plugins (the joblib and submitit launchers); an `__init__.py` there would hide them.
"""
