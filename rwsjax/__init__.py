"""rwsjax: weight-space robustness (RiFT, Robust Weight Signatures) in JAX/Flax."""

__version__ = "0.1.0"


def load(path, **kwargs):
    """``(model, variables)`` of a saved model; see :func:`rwsjax.saved.load` (imported on first use)."""
    from rwsjax.saved import load as _load
    return _load(path, **kwargs)
