"""Fine-tuning on several devices or workers, and what it costs on the network."""
