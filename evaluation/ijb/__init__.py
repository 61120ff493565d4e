"""IJB-B / IJB-C 1:1 verification and 1:N identification in insightface's release layout and protocol.

`layout` reads the release, `align` aligns loose crops to 112x112, `embed` embeds images and flips in
resumable chunks, `pooling` builds media and template features, `scores` the template-pair cosines,
`metrics` the ROC, AUC and TAR@FAR, `identification` the 1:N gallery/probe search (CMC, TPIR@FPIR), and
`verify.evaluate_ijb` runs them in that order.
"""
from evaluation.ijb.layout import IJB_NAMES, IjbLayout, detect_ijb_name, read_ijb_layout
from evaluation.ijb.metrics import IJB_FARS
from evaluation.ijb.verify import IjbOptions, IjbResult, evaluate_ijb

__all__ = ["IJB_NAMES", "IJB_FARS", "IjbLayout", "IjbOptions", "IjbResult", "detect_ijb_name", "evaluate_ijb",
           "read_ijb_layout"]
