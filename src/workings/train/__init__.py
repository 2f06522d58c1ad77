"""Training: the shared run machinery (run folders, checkpoints, the divergence guard, adapters) and SFT."""
