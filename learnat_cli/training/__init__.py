"""Training (LearNAT sec. 3.3): configuration, the SFT and MDPO trainers, the accelerate/DeepSpeed
launcher."""
