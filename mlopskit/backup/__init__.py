"""Backup and restore of the platform: one encrypted archive of both databases, the bucket and (cluster) the keys."""
