"""The `toonforge` command."""
