"""Reinforcement after SFT: GRPO with verifiable rewards (TRL's GRPOTrainer), prompt selection by difficulty."""
