"""Command-line interface (click). Parses flags, calls library functions, prints."""
