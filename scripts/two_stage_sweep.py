"""The whole search in one command: stage 1, refine + stage 2, confirm, report (`src/search.py`).

python scripts/two_stage_sweep.py [--auto-bounds] [--points N] [--confirm-top K]
                                  [--confirm-seeds S] [overrides...]
"""

import gc
import sys
from pathlib import Path

if __name__ == "__main__":
    # No garbage collection while torch, Hydra and Optuna load (each full pass walks all of
    # torch); frozen and turned back on below, as `python -m src.train` does.
    gc.disable()

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.search import main  # noqa: E402

if __name__ == "__main__":
    gc.freeze()
    gc.enable()
    sys.exit(main())
