"""Models (layer 2): the binary-latent VAE, the task BNN, the binary CNN baseline, binary layers
and quantizers (with their training kernels), model summaries, and checkpoints.

May import: `data` and the top-level modules.
"""
