"""Family rows over the mechanisms of models that receive their tables as a forward argument, or compute them
from scaled coordinates (adapters/mechanisms/)."""

from __future__ import annotations
