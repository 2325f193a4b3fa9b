"""Outbound calls: placing them, following them, and campaigns of them."""
