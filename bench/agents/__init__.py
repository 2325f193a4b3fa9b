"""Agents the benchmarks serve: written as Jay agent files, loaded with ``telebridge serve --agent <file>``."""
