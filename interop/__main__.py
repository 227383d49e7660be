"""`python -m interop`: the client runs, then the differential scenarios; exit 1 if
either found a problem."""

from __future__ import annotations

import sys

from interop import client_runs, differential

if __name__ == "__main__":
    clients = client_runs.main([])
    print()
    scenarios = differential.main(sys.argv[1:])
    sys.exit(1 if clients or scenarios else 0)
