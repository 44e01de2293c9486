"""The experiment config: one frozen dataclass per component, composed into ExperimentConfig.

Defaults are the MR-CCL reference values (the MER2024-SEMI recipe of arXiv 2409.04447).
Per-modality values are maps keyed by modality name, with a default for modalities
the map does not name, so the same config works for data with other modality names.
Each module receives only its own section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mer_core.configs.fields import FrozenDict, fld
from mer_core.errors import ConfigError

MER2024_CLASSES = ("worried", "happy", "neutral", "angry", "surprise", "sad")


def check_class_list(classes: tuple[str, ...], field: str) -> None:
    """Class names are label strings: distinct (a repeat shifts every later label index) and non-empty
    (an empty label means "unlabelled")."""
    for i, name in enumerate(classes):
        if not name.strip():
            raise ConfigError(
                f"{field}[{i}]", "a non-empty class name (an empty label means unlabelled)", name, "empty"
            )
        if name in classes[:i]:
            raise ConfigError(f"{field}[{i}]", "distinct class names", name, "duplicate class")


@dataclass(frozen=True)
class SyntheticConfig:
    """`synthetic-mer`: a seeded generator shaped like MER2024-SEMI (small by default)."""

    n_labelled: int = fld(600, ge=12, doc="labelled samples (full MER2024-SEMI: 5030)")
    n_unlabelled: int = fld(2000, ge=0, doc="unlabelled pool (full: 115595)")
    dims: FrozenDict[str, int] = fld(
        {"audio": 64, "text": 96, "video": 48}, ge=1, merge=False, doc="modality -> dim; names the modalities"
    )
    classes: tuple[str, ...] = MER2024_CLASSES
    signal: FrozenDict[str, float] = fld({"audio": 1.0, "text": 0.8, "video": 0.6}, ge=0.0)
    noise: float = fld(1.0, gt=0.0, doc="per-feature gaussian noise std")
    missing_rate: float = fld(0.0, ge=0.0, lt=1.0, doc="chance a sample lacks one modality")

    def check(self, prefix: str) -> None:
        check_class_list(self.classes, f"{prefix}.classes")


@dataclass(frozen=True)
class FeaturesConfig:
    """`features`: a MERTools-style directory, `<root>/<folder>/<sample>.npy` per modality."""

    root: str | None = None
    modalities: FrozenDict[str, str] = fld(
        {
            "audio": "chinese-hubert-large-UTT",
            "text": "Baichuan-13B-Base-UTT",
            "video": "clip-vit-large-patch14-UTT",
        },
        doc="modality name -> feature folder under root (replaces the default map when given)",
        merge=False,
    )
    labels: str = fld("train-label.csv", doc="label CSV (name,label) or MERTools label-6way.npz")
    label_split: str = fld("train_corpus", doc="which corpus of a label .npz to read")
    test_labels: str | None = fld(
        None, doc="held-out test label file (CSV or .npz, like `labels`); its samples become the test split"
    )
    test_label_split: str | None = fld(None, doc="which corpus of a test label .npz to read; null = label_split")
    classes: tuple[str, ...] = fld((), doc="class list; empty = sorted labels found (numerically if all are numbers)")
    trust_pickle: bool = fld(False, doc="allow reading pickled .npz labels (can run code)")
    missing: Literal["mask", "drop", "error"] = "mask"
    frames: Literal["error", "mean"] = "error"  # a (T, D) frame-level file (MERTools -FRM): refused, or time-averaged
    cache_dir: str | None = fld(None, doc="where the packed cache goes; null = <root>/.mersweep-cache")

    def check(self, prefix: str) -> None:
        check_class_list(self.classes, f"{prefix}.classes")


@dataclass(frozen=True)
class UciConfig:
    """`uci-mfeat`: the UCI Multiple Features digits (6 views) shipped in mer_core/data/uci_mfeat/."""

    views: tuple[str, ...] = fld((), doc="subset of fou, fac, kar, pix, zer, mor; empty = all")


@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic-mer", "features", "uci-mfeat"] = "synthetic-mer"
    seed: int = fld(
        0, ge=0, doc="seed of the dataset draw: generation, test split, hidden labels, unlabelled cap (loads once)"
    )
    fold_seed: int | None = fld(
        None, ge=0, doc="seed of the train/validation folds (the hold-out when folds == 1); null = data.seed"
    )
    test_fraction: float = fld(
        0.0, ge=0.0, le=0.5, doc="held-out test share of the labelled samples (stratified); 0 = no test split"
    )
    folds: int = fld(5, ge=1, le=20, doc="k-fold CV on the labelled set; 1 = fixed split")
    val_fraction: float = fld(0.2, gt=0.0, lt=1.0, doc="validation share when folds == 1")
    labelled_fraction: float = fld(1.0, gt=0.0, le=1.0, doc="keep this share labelled, rest -> pool")
    max_unlabelled: int | None = fld(None, ge=0, doc="cap on the unlabelled pool (seeded subsample)")
    standardize: bool = fld(True, doc="z-score each modality (statistics of all present samples; no labels used)")
    synthetic: SyntheticConfig = fld(SyntheticConfig())
    features: FeaturesConfig = fld(FeaturesConfig())
    uci: UciConfig = fld(UciConfig())

    def check(self, prefix: str) -> None:
        if self.source == "features" and not self.features.root:
            raise ConfigError(
                f"{prefix}.features.root", "a feature directory path", None, "required for source=features"
            )
        if self.source == "features" and self.features.test_labels and self.test_fraction > 0:
            # Two test sets at once would leave one of them unused or mixed into training.
            raise ConfigError(
                f"{prefix}.test_fraction",
                f"0 when {prefix}.features.test_labels names the test set",
                self.test_fraction,
                "two test splits",
            )

    @property
    def split_seed(self) -> int:
        """The seed the folds are drawn with: `fold_seed`, or `seed` where it is null."""
        return self.seed if self.fold_seed is None else self.fold_seed

    @property
    def has_test_split(self) -> bool:
        """Whether `load_data` holds out test rows (a share of the labels, or a test label file)."""
        return self.test_fraction > 0 or (self.source == "features" and bool(self.features.test_labels))


@dataclass(frozen=True)
class ModelConfig:
    hidden_dim: int = fld(128, ge=1)
    layers: int = fld(1, ge=0, le=12, doc="Transformer layers per specificity encoder")
    nhead: int = fld(8, ge=1, doc="attention heads (largest divisor of D_m not above it is used)")
    ff_dim: int = fld(2048, ge=1)
    dropout: float = fld(0.0, ge=0.0, lt=1.0)
    attention_shortcut: bool = fld(True, doc="length-1 sequences: attention == out_proj(v_proj(x)), no Q/K held")
    invariant_slope: float = fld(0.01, ge=0.0, doc="LeakyReLU slope of the invariant MLP")
    fusion: str = fld("concat", doc="fusion operator (registry name)")
    fusion_rank: int = fld(4, ge=1, doc="rank of low-rank tensor fusion")
    fusion_input: Literal["specific", "invariant", "both"] = "specific"
    head: str = fld("fc", doc="classifier head (registry name)")
    head_hidden: tuple[int, ...] = fld((256, 128), ge=1)
    head_batchnorm: bool = True
    head_dropout: float = fld(0.0, ge=0.0, lt=1.0)


@dataclass(frozen=True)
class LossConfig:
    w_cls: float = fld(1.0, ge=0.0)
    w_modality: float = fld(1.0, ge=0.0)
    w_noise: float = fld(0.0, ge=0.0, doc="noise term in fine-tuning (reference: 0)")
    pretrain_w_modality: float = fld(1.0, ge=0.0)
    pretrain_w_noise: float = fld(1.0, ge=0.0)
    temperature_init: float = fld(1.0, gt=0.0)
    learnable_temperature: bool = True
    contrastive_target: Literal["specific", "invariant"] = "specific"
    label_smoothing: float = fld(0.0, ge=0.0, lt=1.0)
    cls_heads: Literal["all", "fusion"] = "all"  # CE over all four heads (reference) or the fusion head alone
    # Negative-information removal (MECAM idea; mer_core/negative.py says exactly what is computed).
    neg_alpha: float = fld(0.0, ge=0.0, doc="fine-tuning weight of separating clean from NEE-noised views (0 = off)")
    neg_beta: float = fld(0.0, ge=0.0, doc="fine-tuning weight of separating clean from missing-modality views")
    neg_temperature: float = fld(0.1, gt=0.0, doc="temperature of the negative-removal term")


@dataclass(frozen=True)
class NEEConfig:
    enabled: bool = True
    schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] = "scaled_linear"
    beta_start: float = fld(0.001, gt=0.0, lt=1.0)
    beta_end: float = fld(0.1, gt=0.0, lt=1.0)
    timesteps: FrozenDict[str, int] = fld({"audio": 100, "text": 100, "video": 100}, ge=1)
    default_timesteps: int = fld(100, ge=1, doc="T for modalities `timesteps` does not name")
    noise: Literal["gaussian", "impulse", "gaussian_dropout"] = "gaussian"
    occur_freq: float = fld(0.7, ge=0.0, le=1.0, doc="impulse: chance a coordinate keeps its sign noise")
    dropout_p: float = fld(0.1, ge=0.0, lt=1.0, doc="noise=gaussian_dropout: x*(1+sqrt(p/(1-p))*eps), no schedule")

    def check(self, prefix: str) -> None:
        if self.beta_end <= self.beta_start:
            raise ConfigError(f"{prefix}.beta_end", f"> beta_start ({self.beta_start})", self.beta_end, "out of range")


@dataclass(frozen=True)
class SelfTrainingConfig:
    rounds: int = fld(1, ge=0, le=10)
    dominant_threshold: float = fld(0.99, ge=0.0, le=1.0)
    minority_threshold: float = fld(0.85, ge=0.0, le=1.0)
    class_thresholds: FrozenDict[str, float] = fld({}, ge=0.0, le=1.0, doc="per-class override")
    dominant_share: float | None = fld(None, gt=0.0, lt=1.0, doc="labelled share marking a class dominant; null = 1/C")
    oversample: bool = True
    oversample_to: int = fld(1000, ge=1, doc="samples per class after oversampling")
    max_pseudo: int | None = fld(None, ge=0, doc="cap on pseudo-labels per round (most confident first)")
    reinit: bool = fld(False, doc="retrain each round from a fresh init (else continue from the best model)")


@dataclass(frozen=True)
class VotingConfig:
    weights: FrozenDict[str, float] = fld({"audio": 0.7, "video": 0.4, "text": 0.3, "fusion": 0.7}, ge=0.0)
    default_weight: float = fld(0.5, ge=0.0, doc="weight of heads `weights` does not name")
    space: Literal["logit", "prob"] = "logit"


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = fld(1e-3, gt=0.0, le=10.0)
    weight_decay: float = fld(1e-5, ge=0.0)
    batch_size: int = fld(32, ge=2)
    max_epochs: int = fld(100, ge=1, doc="fine-tuning epochs per stage (early stopping may end sooner)")
    patience: int = fld(10, ge=1, doc="epochs without val weighted-F1 gain before stopping")
    pretrain_epochs: int = fld(10, ge=0, doc="stage-1 contrastive epochs; 0 = skip")
    pretrain_batch_size: int = fld(256, ge=2)
    grad_clip: float | None = fld(1.0, gt=0.0)


@dataclass(frozen=True)
class RetrievalConfig:
    """`missing.impute: retrieval` (RAMER): k nearest training samples found through the present modalities."""

    k: int = fld(5, ge=1, doc="neighbours whose stored states fill a missing one")
    aggregation: Literal["mean", "weighted"] = "mean"  # weighted: softmax(similarity / temperature)
    temperature: float = fld(0.1, gt=0.0, doc="aggregation=weighted: softmax temperature over cosine similarities")


@dataclass(frozen=True)
class MissingConfig:
    """Missing-modality protocol (rates per modality at train and at test time) and imputation.

    A dropped (sample, modality) pair becomes False in the presence mask; a sample always keeps at
    least one of the modalities it has (mer_core/missing/protocol.py). Defaults change nothing.
    """

    train_rate: float = fld(0.0, ge=0.0, le=1.0, doc="chance a training row loses a modality (not in train_rates)")
    train_rates: FrozenDict[str, float] = fld({}, ge=0.0, le=1.0, doc="modality -> train-time rate override")
    test_rate: float = fld(0.0, ge=0.0, le=1.0, doc="chance a validation row loses a modality (not in test_rates)")
    test_rates: FrozenDict[str, float] = fld({}, ge=0.0, le=1.0, doc="modality -> test-time rate override")
    seed: int = fld(0, ge=0, doc="seed of which (sample, modality) pairs are dropped")
    eval_rates: tuple[float, ...] = fld(
        (), ge=0.0, le=1.0, doc="also score the trained model at these test-time rates (val/weighted_f1_missing_<r>)"
    )
    impute: Literal["zero", "mean", "retrieval"] = "zero"  # how a missing modality's hidden state is filled
    retrieval: RetrievalConfig = fld(RetrievalConfig())


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"  # a logged config says which device `auto` found
    precision: Literal["fp32", "bf16", "fp64"] = fld(
        "fp32",
        doc="fp32; bf16 = fp32 storage, bf16 autocast; fp64 = float64 data, parameters, noise and logits "
        "(runs agree across CPUs and thread counts to ~1e-12; train/precision.py)",
    )
    compile: bool = False
    capture: Literal["auto", "always", "never"] = fld(
        "auto", doc="record each training step as a CUDA graph; auto = on CUDA where the step allows (train/capture.py)"
    )
    threads: int | None = fld(
        None, ge=1, doc="torch intra-op threads; null = as is (a sweep's trial: its CPU share); logged: the count used"
    )

    def check(self, prefix: str) -> None:
        if self.capture == "always" and self.device == "cpu":
            raise ConfigError(
                f"{prefix}.capture", "auto, never (CUDA graphs need runtime.device cuda or auto)", self.capture,
                "cannot be honoured on the CPU",
            )  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig:
    seed: int = fld(0, ge=0, doc="seed of model init, batching and noise")
    data: DataConfig = fld(DataConfig())
    model: ModelConfig = fld(ModelConfig())
    loss: LossConfig = fld(LossConfig())
    nee: NEEConfig = fld(NEEConfig())
    self_training: SelfTrainingConfig = fld(SelfTrainingConfig())
    voting: VotingConfig = fld(VotingConfig())
    optim: OptimConfig = fld(OptimConfig())
    missing: MissingConfig = fld(MissingConfig())
    runtime: RuntimeConfig = fld(RuntimeConfig())
