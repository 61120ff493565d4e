"""Utilities every layer shares: the two error types (exit statuses 2 and 1) and atomic file writes."""
