"""Typed configuration: one dataclass per `pipeline.toml` section, and the one set of defaults.

Names follow `DESIGN.md` section 5. Defaults follow insightface's conventions (112x112 aligned faces,
512-d embeddings, arcface_torch's margins, scale and SGD settings); `pipeline.toml` states exactly
these values. What the demo needs to finish on a CPU in minutes is its own preset, `[demo]`.
Allowed values of the string keys are in `config.choices`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunConfig:
    dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"


@dataclass
class SyntheticConfig:
    """The embedded default data set: face-like identities rendered on the fly."""

    identities: int = 150
    images_per_identity: int = 20
    seed: int = 1234
    difficulty: float = 1.0
    heldout_identities: int = 100  # the demo's held-out identities (another generator seed)
    heldout_images_per_identity: int = 10
    heldout_pairs: int = 1000


@dataclass
class DataConfig:
    format: str = "synthetic"  # synthetic | folder | rec | list
    root: str = ""
    image_size: int = 112
    workers: int = 2
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TeacherConfig:
    arch: str = "iresnet50"  # iresnet18/34/50/100, mobilefacenet, timm/<name>, onnx, torchscript
    weights: str = ""
    embedding_size: int = 512
    input_layout: str = "NCHW"  # NCHW | NHWC
    color: str = "RGB"  # RGB | BGR
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    input_size: int = 0  # 0: data.image_size
    batch_size: int = 128


@dataclass
class StudentConfig:
    arch: str = "mobilefacenet"
    embedding_size: int = 512
    dropout: float = 0.0


@dataclass
class CacheConfig:
    path: str = ""  # "": <run.dir>/cache/teacher.h5
    dtype: str = "float16"  # float16 | float32
    positives_k: int = 8
    index: str = "auto"  # auto (flat up to 1M rows at D = 512, else ivfpq) | flat | ivf | ivfpq
    ivf_nlist: int = 0  # 0: about 4 * sqrt(N) (ivfpq: at most 1024)
    ivf_nprobe: int = 16
    pq_m: int = 64  # ivfpq: bytes per row (sub-quantizers); must divide the embedding size
    in_ram: str = "auto"  # auto | always | never
    ram_limit_gb: float = 8.0
    chunk_rows: int = 1024


@dataclass
class LossConfig:
    # auto (from the training set's images per identity, config.auto) | icd (margin + FCD + SDC) |
    # fcd (margin + FCD) | adadistill | ekd | rkd | margindistillation
    method: str = "auto"
    head: str = "arcface"  # arcface | cosface
    scale: float = 64.0
    margin: float = 0.5
    margin_weight: float = 1.0  # 0: no margin head in distill (pure regression on the cached targets)
    # Partial FC (arcface_torch PartialFC v2): each step scores the batch's classes plus random others, up to
    # sample_rate x classes centres (1: all classes, the plain margin head)
    sample_rate: float = 1.0
    fcd_weight: float = 1.0
    sdc_weight: float = 1.0
    # in-batch different-identity pairs: the student's similarity distribution pulled to the teacher's (DDL)
    impostor_sdc_weight: float = 0.0


@dataclass
class IcdConfig:
    """Section 1's choices for the similarity-distribution-consistency term."""

    pairs: str = "bank"  # bank (the feature bank only) | batch (the batch's identity groups) | both
    bank_size: int = 8
    max_age: int = 1000
    bank_dtype: str = "float32"  # float32 | float16 | bfloat16: storage of the bank's embeddings
    bank_place: str = "device"  # device (the training device) | host (pinned CPU memory, gathered per step)
    grid_step: float = 0.01
    sigma: float = 0.1
    kl_eps: float = 1e-10
    kl_direction: str = "teacher_student"  # teacher_student: KL(P_t || P_s) | student_teacher
    distribution: str = "pooled"  # pooled: one distribution over the step's pairs | per_identity: one per identity
    warmup_epochs: float = 0.0


@dataclass
class RkdConfig:
    """`loss.method = "rkd"` (Park et al., CVPR 2019): L = margin + w_fcd FCD + these weights x RKD's two terms."""

    distance_weight: float = 25.0
    angle_weight: float = 50.0


@dataclass
class EkdConfig:
    """`loss.method = "ekd"` (Huang et al., CVPR 2022; TFace `ekd` defaults): L = margin + w_fcd FCD + weight EKD."""

    weight: float = 1.0
    fprs: list[float] = field(default_factory=lambda: [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6])  # threshold FPRs
    temperature: float = 0.01  # soft-rank sigmoid temperature, cosine units
    top_k: int = 2000  # negatives with the highest student similarity
    pos_weight: float = 0.02
    neg_weight: float = 0.01
    momentum: float = 0.01  # EMA of the thresholds (running from 0)
    critical_only: bool = False  # true: only pairs whose hard ranks differ (the paper's critical relations)


@dataclass
class AdaDistillConfig:
    """`loss.method = "adadistill"` (Boutros et al., ECCV 2024): margin softmax against EMA teacher centres, alone."""

    head: str = "arcface"  # arcface (AdaArcDistill) | cosface (AdaCosDistill; the code's class default m = 0.35)
    scale: float = 64.0
    margin: float = 0.45
    weighted_alpha: bool = True


@dataclass
class MarginDistillationConfig:
    """`loss.method = "margindistillation"` (Svitov & Alyamkin, 2020): ArcFace against frozen teacher centres with
    per-sample margins in [margin_min, margin_max] (radians), alone."""

    scale: float = 64.0
    margin_min: float = 0.2
    margin_max: float = 0.5


@dataclass
class TrainConfig:
    steps: int = 0  # total optimiser steps; 0: derived from epochs
    epochs: float = 10.0
    batch_size: int = 128
    identities_per_batch: int = 0  # P; 0: batch_size // images_per_identity
    images_per_identity: int = 4  # M >= 2
    random_share: float = 1.0  # 1.0: random batches, no identity groups (needs icd.pairs = "bank"); 0: P x M
    # nearest | farthest | random: which same-identity rows fill an anchor's group (distill)
    positive_policy: str = "nearest"
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    schedule: str = "cosine"  # cosine | step | constant
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.85])  # fractions of steps
    gamma: float = 0.1
    grad_clip: float = 5.0
    grad_accum: int = 1  # batches a process trains on per optimiser step (their gradients summed, each loss / N)
    amp: str = "auto"  # auto | none | bf16 | fp16
    checkpoint_every: int = 500
    log_every: int = 20
    eval_every: int = 0
    tensorboard: str = "auto"  # auto (when installed) | always | never: scalars in <run.dir>/tensorboard
    resume: str = ""  # "": fresh; "auto": latest checkpoint in run.dir; or a checkpoint path


@dataclass
class EvalConfig:
    pairs: list[str] = field(default_factory=list)
    root: str = ""
    # student | teacher | cache | <path>, or a list of them: several models are compared with each other
    model: list[str] = field(default_factory=lambda: ["student"])
    n_boot: int = 1000  # paired-bootstrap replicates of each comparison (over identities)
    batch_size: int = 256
    nfolds: int = 10
    # IJB-B / IJB-C roots in `pairs`: insightface's three switches, at its defaults
    ijb_flip_test: bool = True  # image feature = emb(image) + emb(flip), else emb(image)
    ijb_norm_score: bool = True  # keep image feature norms; false: L2-normalise each image feature first
    ijb_detector_score: bool = True  # weight each image feature by its detector score


@dataclass
class DemoConfig:
    """`python cli.py demo`: its CPU-sized preset, applied over the other sections, and its budgets.

    The demo trains a teacher (`train` on `teacher_arch`), extracts its cache and trains three students
    of `student_arch` (no distillation, FCD only, FCD + ICD) for each seed. The sizes here let that
    finish in minutes on two CPU cores; the other sections' defaults are insightface's.
    """

    image_size: int = 32  # -> data.image_size
    teacher_arch: str = "iresnet18"  # -> teacher.arch (and the arch the demo's teacher is trained with)
    teacher_embedding_size: int = 256  # -> teacher.embedding_size
    teacher_epochs: float = 14.0  # the teacher's `train` budget
    teacher_lr: float = 0.1
    # the teacher's train.random_share: P x M identity groups (0), as the teacher of the reported synthetic
    # sweeps was trained; its students follow train.random_share
    teacher_random_share: float = 0.0
    student_arch: str = "mobilefacenet"  # -> student.arch
    student_embedding_size: int = 128  # -> student.embedding_size
    student_epochs: float = 4.0  # -> train.epochs of every student
    warmup_steps: int = 50  # -> train.warmup_steps
    scale: float = 32.0  # -> loss.scale
    fcd_weight: float = 5.0  # -> loss.fcd_weight; chosen on a tuning run with synthetic seed 99 (docs/results.md)
    seeds: list[int] = field(default_factory=lambda: [0])  # students are trained once per seed


@dataclass
class SplitConfig:
    """`python cli.py split`: the `[data]` set split by identity into training and held-out sets."""

    seed: int = 0
    heldout_fraction: float = 0.2  # of the identities; those with fewer than 2 images always train
    out_dir: str = ""  # "": <run.dir>/split
    impostor_pairs: int = 0  # LFW-style impostor pairs; 0: max(100000, genuine pairs), capped at all of them
    template_size: int = 3  # images per IJB-style template (at least; an identity's images dealt round-robin)
    impostor_template_pairs: int = 0  # 0: max(100000, genuine template pairs), capped at all of them


@dataclass
class ExportConfig:
    """`python cli.py export`: a student -> ONNX, verified with onnxruntime, and its model card."""

    model: str = "student"  # student (the run's latest checkpoint) | a checkpoint or backbone.pth path
    output: str = ""  # "": <run.dir>/student.onnx; the model card is written beside it
    opset: int = 17
    dtype: str = "float32"  # float32 | float16 (weights and input)


@dataclass
class AlignConfig:
    """`python cli.py align SOURCE OUTPUT`: photos -> ArcFace 112x112 aligned faces (`alignment/`).

    Gates are fractions of a photo's shorter side; the defaults reproduce the aligned LFW DevTrain set."""

    detector: str = "hog+cnn"  # hog | cnn | hog+cnn (the MMOD CNN where HOG finds no qualifying face)
    upsample: int = 1  # times each detector upsamples the photo (finds faces down to about 40 / 2^n px)
    max_side: int = 500  # ... unless its longer side would exceed this: then resized to it (0: no cap)
    pick: str = "center"  # center (nearest the centre within the gates) | largest | consensus (by [teacher])
    min_face: float = 0.2  # least face box width, fraction of the shorter side
    center_gate: float = 0.2  # pick = center: largest box-centre distance from the photo centre, same units
    fallback: str = "skip"  # skip (named in the manifest and a contact sheet) | center_crop (a fixed crop)
    crop_side: float = 0.5132  # center_crop: square side / shorter side (LFW's frames; tight face crops ~1)
    max_shrink: float = 1.5  # a face shrunk more than this is area-filtered first (0: never)
    format: str = "png"  # png | jpeg
    jpeg_quality: int = 95
    sheet_faces: int = 64  # tiles per contact sheet


@dataclass
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    icd: IcdConfig = field(default_factory=IcdConfig)
    rkd: RkdConfig = field(default_factory=RkdConfig)
    ekd: EkdConfig = field(default_factory=EkdConfig)
    adadistill: AdaDistillConfig = field(default_factory=AdaDistillConfig)
    margindistillation: MarginDistillationConfig = field(default_factory=MarginDistillationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
