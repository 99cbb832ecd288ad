"""Stores: the one fingerprint (keys), checkpoint folders (resume), the pool cache (entries)."""
