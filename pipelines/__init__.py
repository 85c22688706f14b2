"""One recipe per method (TOML): what a shard sample holds and, later, how the method trains."""
