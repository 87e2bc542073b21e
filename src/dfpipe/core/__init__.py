"""Core: configuration, atomic IO, shards, manifests and pinned model assets shared by every phase."""
