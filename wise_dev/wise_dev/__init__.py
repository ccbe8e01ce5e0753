"""WISE perception development tools (tests, benchmarks, demo); not part of the product."""
