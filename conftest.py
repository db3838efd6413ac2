"""pytest setup for the whole repository (the library's tests and the notebooks run by nbval).

Point ctxlib at the local copy of the course data, so that nothing is downloaded in tests.
The notebooks' kernels inherit this environment.
"""

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if "CTXLIB_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["CTXLIB_DATA"] = str(SHARED_DATA)
os.environ.setdefault("CTXLIB_PROGRESS", "text")  # no widget progress bars in test kernels
