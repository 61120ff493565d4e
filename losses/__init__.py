"""Loss terms of ICD-Face (Yu et al., ICCV 2023): margin softmax, FCD, SDC and their weighted sum."""
from losses.fcd import feature_consistency_loss
from losses.margin import MarginHead, combined_margin_logits, combined_margin_target, margin_params
from losses.sdc import (
    kernel_density,
    kl_divergence,
    similarity_distribution_consistency,
    similarity_grid,
)
from losses.total import weighted_sum

__all__ = [
    "MarginHead", "combined_margin_logits", "combined_margin_target", "margin_params",
    "feature_consistency_loss", "kernel_density", "kl_divergence",
    "similarity_distribution_consistency", "similarity_grid", "weighted_sum",
]
