"""The dhash recipe: dHash fingerprints, near-duplicate clusters and the review queue of an
image library (its own command: ``handrail review``)."""
