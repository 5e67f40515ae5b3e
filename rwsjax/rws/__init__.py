"""Robust Weight Signatures (Cai, Zhang & Wang, "Robust Weight Signatures: Gaining
Robustness as Easy as Patching Weights?", ICML 2023).

* :mod:`rwsjax.rws.signatures` — RWS extraction (projection of the robust
  update orthogonal to the clean one), bit-packed quantization, fingerprints
  and the ``.safetensors`` signature file format.
* :mod:`rwsjax.rws.patching` — compatibility checks, patching
  θ_target + Σ λ_c·RWS_c, reversible :class:`Patched` models, λ sweeps and
  BatchNorm re-estimation.
* :mod:`rwsjax.rws.analysis` — per-layer relative differences, signature
  cosine similarities, storage sizes.
"""

from rwsjax.rws.analysis import (
    cosine_similarity_matrix,
    full_model_bytes,
    relative_difference,
    storage_report,
)
from rwsjax.rws.patching import (
    Patched,
    SignatureMismatchError,
    check_compatible,
    patch,
    reestimate_batch_stats,
    scale_sweep,
)
from rwsjax.rws.signatures import (
    FORMAT_VERSION,
    Quantized,
    Signature,
    SignatureFormatError,
    conv_modules,
    dequantize,
    extract,
    fingerprint,
    load_signature,
    make_signature,
    project_out,
    quantize,
    save_signature,
    select_shallowest,
)

__all__ = [
    "FORMAT_VERSION", "Patched", "Quantized", "Signature", "SignatureFormatError",
    "SignatureMismatchError", "check_compatible", "conv_modules",
    "cosine_similarity_matrix", "dequantize", "extract", "fingerprint",
    "full_model_bytes", "load_signature", "make_signature", "patch", "project_out",
    "quantize", "reestimate_batch_stats", "relative_difference", "save_signature",
    "scale_sweep", "select_shallowest", "storage_report",
]
