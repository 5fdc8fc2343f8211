"""The contract between the fused launcher (`hydra/launcher=lrsweep_fused`) and an app's batch
function: the batch function raises `CannotFuse` for a batch it cannot train together, or
returns one in place of the function of each job it did not train (one object per reason: the
launcher says each once), and the launcher runs those jobs one at a time.

It lives here, not beside the launcher: Hydra's plugin scan executes the modules under
`hydra_plugins/` again (a new module object each time), so a class defined there would not be the
one an app imported before the scan, and `except` would miss it.
"""


class CannotFuse(Exception):
    """Raised, or returned per job, by a batch function for jobs it cannot train together; the
    message says why."""
