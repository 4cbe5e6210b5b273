"""``python -m edgetune.methods``: rewrite ``edgetune/catalog.json`` from the method registry."""

from ..catalog import write

print(f"wrote {write()}")
