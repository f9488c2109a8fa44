"""What several config sections share."""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9_-]+")  # teacher and increment names: they name stages and directories
