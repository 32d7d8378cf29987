"""Print pip constraints that pin every dependency of dasktrain to its declared minimum.

``pip install -c <(python .ci/minimums.py) -e ".[test]"`` then installs the oldest versions
pyproject.toml claims to support, so a test run there checks the claim (``.ci/run`` does it
as its minimum-versions step). Every requirement of the core and of the extras named on the
command line must have a lower bound (``>=``); one without fails here, by name.

Usage: ``python .ci/minimums.py [extra ...]`` (default: the core dependencies only).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$")


def lower_bounds(extras=()):
    """``{name: minimum}`` for the core dependencies and the given extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += [r for r in project["optional-dependencies"][extra] if "dasktrain" not in r]
    out = {}
    for req in reqs:
        name, _, spec = _REQ.match(req).groups()
        found = re.search(r">=\s*([0-9][^,;\s]*)", spec)
        if found is None:
            raise SystemExit(f"{req!r} in pyproject.toml has no lower bound (>=): add one.")
        out[name.lower()] = found.group(1)
    return out


def main(argv):
    for name, version in sorted(lower_bounds(argv).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1:])
