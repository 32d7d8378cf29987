"""The dasktrain.* settings: every key is read by the code that it claims to configure."""

from __future__ import annotations

from pathlib import Path

import dasktrain
from dasktrain._config import DEFAULTS


def _keys(tree, prefix=""):
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_every_setting_is_read():
    # Regression: features.batch-size and ddp.timeout were declared but nothing read them.
    package = Path(dasktrain.__file__).parent
    source = "\n".join(p.read_text() for p in package.rglob("*.py") if p.name != "_config.py")
    unread = [key for key in _keys(DEFAULTS["dasktrain"]) if f'"{key}"' not in source]
    assert unread == [], f"settings nothing reads: {unread}"
