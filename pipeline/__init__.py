"""Pipeline: manifests, decoding, extraction, tokenization and token shards."""
