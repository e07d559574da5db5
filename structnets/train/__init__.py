"""The one training engine, checkpoints and run directories, distributed set-up and the data directory."""
