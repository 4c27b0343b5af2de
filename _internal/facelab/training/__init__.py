"""The training loop, sample cache, previews and backups."""
