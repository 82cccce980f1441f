"""Models: the RC-MAE ViT masked autoencoder, its losses (pure functions of tensors), the angular-margin family.
torch only: no Lightning, no data loading, no training code."""
