"""Different-identity (impostor) pairs of one step, for the impostor-similarity distribution term.

The positive-pair SDC term of ICD-Face (Yu et al., ICCV 2023) pulls the student's same-identity
similarities towards the teacher's, and nothing in it keeps different identities apart: on unseen
identities the student can become more compact than the teacher while its impostor similarities
grow. DDL (Huang et al., ECCV 2020) distils the distributions of both positive and negative pairs;
this module gives the negative side: every in-batch pair of images of different identities, student
similarity <e_i, e_j> (live) and teacher similarity <t_i, t_j> (cache), each distinct image pair
weighted once (`pairs.distinct_pair_weights`). The term is `loss.impostor_sdc_weight` x
`losses.sdc.similarity_distribution_consistency` over these pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.device import to_device
from stages.training.pairs import distinct_pair_weights


@dataclass
class ImpostorPairs:
    """In-batch different-identity pair similarities: student [P] live, teacher [P] from the cache, weights [P]."""

    student: torch.Tensor
    teacher: torch.Tensor
    weights: torch.Tensor


def impostor_pairs(emb: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> ImpostorPairs:
    """Every in-batch pair (i < j) of different identities.

    emb: [B, D_s] unit student embeddings; targets: [B, D_t] unit teacher targets of the same images;
    labels, rows: [B] int64 identity and dataset row, on the host (the pairs are found there, without
    waiting for the device). Cosine similarities in [-1, 1].
    """
    other = labels[:, None] != labels[None, :]
    i, j = torch.nonzero(torch.triu(other, diagonal=1), as_tuple=True)
    di, dj = to_device(i, emb.device), to_device(j, emb.device)
    return ImpostorPairs((emb[di] * emb[dj]).sum(-1), (targets[di] * targets[dj]).sum(-1),
                         to_device(distinct_pair_weights(rows[i], rows[j]), emb.device))
