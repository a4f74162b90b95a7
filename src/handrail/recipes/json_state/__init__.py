"""Recipe: move the py-captions JSON state files into one SQLite database."""
