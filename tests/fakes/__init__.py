"""Test doubles that speak real wire protocols (so the real client libraries can be pointed at them)."""
