"""Input/output: safe image decoding, video, checkpoints, asset paths."""
