"""Command-line interface: the only part of prunebench that prints or reads argv."""
