"""rwsjax: weight-space robustness (RiFT, Robust Weight Signatures) in JAX/Flax."""
