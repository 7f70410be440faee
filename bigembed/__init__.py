"""bigembed: out-of-core, partitioned graph embeddings, PyTorch-BigGraph style."""

__version__ = "0.1.0"
