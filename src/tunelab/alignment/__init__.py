"""Alignment after fine-tuning: TRL's preference (DPO, KTO, ORPO) and reward (GRPO, RLOO) trainers on the SFT model."""
