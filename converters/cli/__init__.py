"""The `tinyvision` command: build | train | convert | analyze | export."""
