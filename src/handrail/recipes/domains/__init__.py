"""The domains recipe: a document catalogue's domain backfill and its push to a video site;
logic, sample data, and the tied-document review queue (its own command: ``handrail ties``)."""
