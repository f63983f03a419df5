"""The command line: typer commands over the library, which never imports it (layer 9)."""
