"""Features: the frozen ImageNet backbones and the patch features they give (layer 2)."""
