"""Generation and evaluation: the `stream_generate` seam (`generate`), samplers (`sampling`), and held-out
bits per byte (`evaluate`)."""
