"""engine: see docs/design.md, "Layout"."""
