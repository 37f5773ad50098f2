"""The Textual dashboard for mlxstory; ships inside the package as `mlxstory.tui`."""
