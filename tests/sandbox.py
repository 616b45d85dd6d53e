#!/usr/bin/env python3
"""tests/sandbox.py — the command line of the sandbox package (tests/sandbox/):

    python3 tests/sandbox.py demo [--keep]
    python3 tests/sandbox.py start [DOMAIN...]     (runs until Ctrl-C)
    python3 tests/sandbox.py stop RUNDIR

Run as a script, this file is __main__, and `import sandbox` finds the
package tests/sandbox/ (a directory package comes before a module of the
same name on one sys.path entry); programs import the package itself."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox  # noqa: E402

if __name__ == "__main__":
    sys.exit(sandbox.main(sys.argv[1:]))
