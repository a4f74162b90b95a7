"""Recipe B: dHash fingerprints and near-duplicate clusters for an image library."""
