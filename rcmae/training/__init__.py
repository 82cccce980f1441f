"""Training: Lightning modules around the models, the shared fit loop, the pretrain / fine-tune stages
and the margin family's one stage. Writes run folders; never scores (the run folder is the contract)."""
