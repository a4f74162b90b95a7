"""steps: see docs/design.md, "Layout"."""
