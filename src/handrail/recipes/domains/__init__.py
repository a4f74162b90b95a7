"""Domain categorization backfill and push (seed 000/001): logic, sample data, review."""
