"""Augmentation: SpecAugment masking, the procedural and AudioLDM backends, and augmentation banks.

- ``specaugment``: time/frequency masking on log-mel (the paper's "without DDA" arm).
- ``procedural``: a weight-free prompt-to-noise synthesiser mixed in at a chosen SNR (not the paper's method).
- ``audioldm``: the paper's diffusion audio-to-audio augmentation (needs AudioLDM weights).
- ``bank``: writes augmented copies of a data set with a manifest; ``BankPairs`` serves them to pretraining.

Submodules are imported on use, so ``import rcmae.augment`` pulls in neither torch nor diffusers.
"""
