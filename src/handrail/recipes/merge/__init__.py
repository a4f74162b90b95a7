"""The merge recipe: an app's two diverged SQLite copies (YTV2) into one PostgreSQL; its
sample, merge rules and schema."""
