"""Signed webhooks (Standard Webhooks): endpoints, the outbox of events, deliveries."""
