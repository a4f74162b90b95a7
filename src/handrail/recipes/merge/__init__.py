"""YTV2 merge (seed 004): two diverged SQLite copies into one PostgreSQL; sample, rules, schema."""
