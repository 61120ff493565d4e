"""Loss terms of ICD-Face (Yu et al., ICCV 2023): margin softmax, FCD, SDC and their weighted sum; and the
building blocks of the alternatives users would pick instead (RKD, EKD, AdaDistill, MarginDistillation)."""
from losses.adadistill import adadistill_alpha, adadistill_logits, adadistill_loss, teacher_centre_update
from losses.ekd import (
    EKD_FPRS,
    critical_pair_mask,
    ekd_loss,
    ekd_thresholds,
    ema_thresholds,
    fpr_thresholds,
    pair_similarities,
    rank_loss,
    soft_rank,
)
from losses.fcd import feature_consistency_loss
from losses.margin import MarginHead, combined_margin_logits, combined_margin_target, margin_params
from losses.margin_distillation import (
    arcface_target,
    class_margins,
    margin_distillation_logits,
    margin_distillation_loss,
    teacher_class_centres,
)
from losses.rkd import (
    normalized_distances,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
    triplet_angles,
)
from losses.sdc import (
    gaussian_kernel,
    identity_distribution_consistency,
    kernel_density,
    kl_divergence,
    similarity_distribution_consistency,
    similarity_grid,
)
from losses.total import weighted_sum

__all__ = [
    "MarginHead", "combined_margin_logits", "combined_margin_target", "margin_params",
    "feature_consistency_loss", "gaussian_kernel", "identity_distribution_consistency", "kernel_density",
    "kl_divergence",
    "similarity_distribution_consistency", "similarity_grid", "weighted_sum",
    "rkd_distance_loss", "rkd_angle_loss", "pairwise_distances", "normalized_distances", "triplet_angles",
    "EKD_FPRS", "pair_similarities", "fpr_thresholds", "ekd_thresholds", "ema_thresholds", "soft_rank",
    "critical_pair_mask", "rank_loss", "ekd_loss",
    "adadistill_alpha", "teacher_centre_update", "adadistill_logits", "adadistill_loss",
    "teacher_class_centres", "class_margins", "arcface_target", "margin_distillation_logits",
    "margin_distillation_loss",
]
