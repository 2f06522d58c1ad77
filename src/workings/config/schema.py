"""The profile schema: typed dataclass configs, one per section of a profile's YAML file.

Every section validates itself (:meth:`Profile.validate`): an impossible value raises
:class:`ProfileError` naming the key (``data.sources[2].cap``); :mod:`workings.config.loading`
adds the file. The trainer section ``sft`` holds ``trl.SFTConfig`` options by TRL's own names
and is validated by building that config (:mod:`workings.config.trainer_options`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")
# The linear layers of a Gemma decoder layer: what QLoRA quantizes and LoRA wraps.
GEMMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Attention implementations that keep packed examples apart: flash attention reads the boundaries
# TRL's padding-free collator passes; eager and flex_attention honour the block-diagonal mask that
# transformers (>= 4.56) builds from positions restarting at 0 when there is no cache. Each keeps
# Gemma 2's attention-logit softcapping (flash attention from 2.6). Training measures it again on
# the loaded model (train.sft.check_packing), since a version or kernel may not do what it says.
PACKING_SAFE_ATTENTION = ("eager", "flex_attention", "flash_attention_2", "flash_attention_3")
GOLD_FORMATS = ("plain", "gsm8k", "boxed")
ENGINES = ("hf", "vllm")


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ProfileError(f"{key}: {message}")


@dataclass
class SyntheticSpec:
    """Rows made by :func:`workings.synthetic.generate_synthetic`."""

    n: int
    seed: int
    min_steps: int = 1
    max_steps: int = 4
    numbers: str = "standard"  # or "small": one-digit changes to small collections, for tiny models

    def validate(self, key: str) -> None:
        from workings.data.synthetic import NUMBER_RANGES

        _check(self.n > 0, f"{key}.n", f"must be positive, got {self.n}")
        _check(self.seed >= 0, f"{key}.seed", f"must be 0 or more, got {self.seed}")
        _check(1 <= self.min_steps <= self.max_steps, f"{key}.min_steps", "need 1 <= min_steps <= max_steps")
        _check(self.numbers in NUMBER_RANGES, f"{key}.numbers",
               f"must be one of {sorted(NUMBER_RANGES)}, got {self.numbers!r}")


@dataclass(kw_only=True)
class Origin:
    """Where rows come from: exactly one of a Hub dataset, a local file, or the synthetic generator."""

    hub_id: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    path: str | None = None
    synthetic: SyntheticSpec | None = None

    def validate(self, key: str) -> None:
        origins = [o for o in ("hub_id", "path", "synthetic") if getattr(self, o) is not None]
        _check(len(origins) == 1, key, f"needs exactly one of hub_id, path, synthetic; got {origins or 'none'}")
        if self.synthetic is not None:
            self.synthetic.validate(f"{key}.synthetic")


@dataclass(kw_only=True)
class SourceSpec(Origin):
    """One training source: where its rows come from and how many the mix takes."""

    name: str
    converter: str
    cap: int | None = None  # most distinct training rows kept from this source
    weight: float = 1.0  # repetition factor after capping: 0.5 keeps half, 2.0 repeats every row twice
    heldout: int = 0  # questions set aside for evaluation
    keep_domains: list[str] = field(default_factory=lambda: ["math"])  # OpenThoughts metadata only

    def validate(self, key: str) -> None:
        from workings.data.sources import CONVERTERS

        _check(self.converter in CONVERTERS, f"{key}.converter", f"unknown converter {self.converter!r}; known: {', '.join(CONVERTERS)}")
        super().validate(key)
        _check((self.synthetic is not None) == (self.converter == "synthetic"), f"{key}.synthetic", "goes with converter: synthetic, and only with it")
        _check(self.cap is None or self.cap > 0, f"{key}.cap", f"must be positive or null, got {self.cap}")
        _check(self.weight > 0, f"{key}.weight", f"must be positive, got {self.weight}")
        _check(self.heldout >= 0, f"{key}.heldout", f"must be >= 0, got {self.heldout}")


@dataclass(kw_only=True)
class EvalSetSpec(Origin):
    """Questions training rows are decontaminated against (and, later, evaluated on)."""

    name: str
    split: str = "test"
    question_field: str = "question"
    answer_field: str = "answer"
    gold: str = "plain"  # how the answer field holds the gold: plain, gsm8k (after ####) or boxed (last \\boxed{})
    graded: bool = True  # false for free-text answers: format and length are measured, accuracy is not
    group_by: list[str] = field(default_factory=list)  # row fields results are broken down by (subject, level)

    def validate(self, key: str) -> None:
        super().validate(key)
        _check(self.gold in GOLD_FORMATS, f"{key}.gold", f"must be one of {', '.join(GOLD_FORMATS)}, got {self.gold!r}")


@dataclass
class DecontaminationConfig:
    """A training question is contaminated when ``threshold`` of its word n-grams occur in an evaluation question."""

    ngram: int = 13
    threshold: float = 0.5

    def validate(self, key: str) -> None:
        _check(self.ngram >= 1, f"{key}.ngram", f"must be >= 1, got {self.ngram}")
        _check(0 < self.threshold <= 1, f"{key}.threshold", f"must be in (0, 1], got {self.threshold}")


@dataclass
class DataConfig:
    sources: list[SourceSpec]
    eval_sets: list[EvalSetSpec] = field(default_factory=list)
    seed: int = 0
    max_length: int = 1024  # tokens of the rendered chat; longer rows are dropped, never cut
    max_per_question: int = 1  # rows kept per (near-)identical question
    near_duplicate_threshold: float = 0.8  # Jaccard similarity of word 3-gram shingles
    drop_flagged: bool = True  # drop rows whose answer disagrees with the source's ground truth
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def validate(self, key: str) -> None:
        _check(len(self.sources) > 0, f"{key}.sources", "needs at least one source")
        names = [s.name for s in self.sources] + [e.name for e in self.eval_sets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _check(not dupes, key, f"source and eval-set names must be unique; repeated: {dupes}")
        _check(self.max_length > 0, f"{key}.max_length", f"must be positive, got {self.max_length}")
        _check(self.seed >= 0, f"{key}.seed", f"must be 0 or more, got {self.seed}")
        _check(self.max_per_question >= 1, f"{key}.max_per_question", f"must be >= 1, got {self.max_per_question}")
        _check(0 < self.near_duplicate_threshold <= 1, f"{key}.near_duplicate_threshold", "must be in (0, 1]")
        for i, source in enumerate(self.sources):
            source.validate(f"{key}.sources[{i}]")
        for i, eval_set in enumerate(self.eval_sets):
            eval_set.validate(f"{key}.eval_sets[{i}]")
        self.decontamination.validate(f"{key}.decontamination")


@dataclass
class ModelConfig:
    """The model; ``id: tiny`` is the project's own tiny Gemma built by :mod:`workings.tiny`."""

    id: str
    revision: str | None = None
    dtype: str = "bfloat16"  # of the weights that are not quantized
    # Gemma2's attention needs eager (or flash-attention with softcapping) in transformers 5.
    attn_implementation: str = "eager"

    def validate(self, key: str) -> None:
        _check(self.dtype in DTYPES, f"{key}.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass
class QuantizationConfig:
    """bitsandbytes quantization of the frozen base (QLoRA); absent means the base is not quantized."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    # The dtype the packed 4-bit weights are stored in (bitsandbytes' bnb_4bit_quant_storage; uint8
    # when null). FSDP shards only floating-point tensors of one dtype: set it to model.dtype to shard.
    quant_storage: str | None = None

    def validate(self, key: str) -> None:
        _check(self.bits in (4, 8), f"{key}.bits", f"must be 4 or 8, got {self.bits}")
        _check(self.quant_type in ("nf4", "fp4"), f"{key}.quant_type", f"must be nf4 or fp4, got {self.quant_type!r}")
        _check(self.compute_dtype in DTYPES, f"{key}.compute_dtype", f"must be one of {', '.join(DTYPES)}")
        _check(self.quant_storage is None or self.quant_storage in DTYPES, f"{key}.quant_storage",
               f"must be null or one of {', '.join(DTYPES)}, got {self.quant_storage!r}")
        _check(self.quant_storage is None or self.bits == 4, f"{key}.quant_storage", "applies to 4-bit weights only")


@dataclass
class LoraConfig:
    """The LoRA adapter: rank, scale (alpha / r), dropout and the linear layers it wraps."""

    r: int = 32
    alpha: float = 64
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(GEMMA_LINEAR_MODULES))
    # dtype of the saved adapter files, final and checkpoints. Over a quantized base TRL trains the
    # adapter in bfloat16 (the QLoRA paper's recommendation), so float32 files hold those values exactly.
    save_dtype: str = "bfloat16"

    def validate(self, key: str) -> None:
        _check(self.r > 0, f"{key}.r", f"must be positive, got {self.r}")
        _check(self.alpha > 0, f"{key}.alpha", f"must be positive, got {self.alpha}")
        _check(0 <= self.dropout < 1, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(len(self.target_modules) > 0, f"{key}.target_modules", "needs at least one module")
        _check(self.save_dtype in DTYPES, f"{key}.save_dtype", f"must be one of {', '.join(DTYPES)}")


@dataclass
class TrainingConfig:
    """The project's own settings of a training run; the trainer's options are in ``sft`` by TRL's names."""

    device: str = "cuda"  # cuda or cpu; checked against the machine before any model is loaded
    eval_rows: int | None = 500  # held-out rows used for the evaluation loss (all when null)
    divergence_factor: float = 4.0  # stop when a logged loss exceeds this multiple of the first one
    # What the book does when the run folder already holds checkpoints: restart (the demo's few
    # minutes) or resume (a GPU run of hours continues where it stopped; a finished one is kept).
    rerun: str = "resume"
    # The GPU the profile is made for and its memory: the QLoRA chapter checks the predicted peak against it.
    gpu: str | None = None
    gpu_memory_gib: float | None = None
    # Processes the profile trains with (one per GPU, under accelerate launch): its global batch is
    # per_device_train_batch_size x gradient_accumulation_steps x processes, so a run with another
    # number of processes is refused rather than trained with another batch.
    processes: int = 1
    # Shard the base, the adapter and the optimizer state over the processes with FSDP (for a model
    # that does not fit one GPU); launched with accelerate's config/accelerate/fsdp-qlora.yaml.
    fsdp: bool = False
    # Threads torch computes with (every command and the book alike); null leaves torch's default.
    # On a CPU the count is part of what a run produces: sums are added in another order.
    threads: int | None = None

    def validate(self, key: str) -> None:
        _check(self.threads is None or self.threads >= 1, f"{key}.threads", f"must be at least 1 or null, got {self.threads}")
        _check(self.device in ("cuda", "cpu"), f"{key}.device", f"must be cuda or cpu, got {self.device!r}")
        _check(not self.fsdp or self.device == "cuda", f"{key}.fsdp",
               "FSDP shards over GPUs (accelerate turns it on only for GPU process groups); the device is cpu")
        _check(self.gpu_memory_gib is None or self.gpu_memory_gib > 0, f"{key}.gpu_memory_gib", "must be positive or null")
        _check(self.processes >= 1, f"{key}.processes", f"must be at least 1, got {self.processes}")
        _check((self.gpu is None) == (self.gpu_memory_gib is None), f"{key}.gpu",
               "gpu and gpu_memory_gib go together: name the card and give its memory")
        _check(self.eval_rows is None or self.eval_rows > 0, f"{key}.eval_rows", "must be positive or null")
        _check(self.divergence_factor > 1, f"{key}.divergence_factor", f"must be above 1, got {self.divergence_factor}")
        _check(self.rerun in ("resume", "restart"), f"{key}.rerun", f"must be resume or restart, got {self.rerun!r}")


# The names the ``training`` section had before TRL's options moved to ``sft``: each says where it went.
MOVED_TO_SFT = {
    "epochs": "num_train_epochs", "max_steps": "max_steps", "per_device_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "learning_rate": "learning_rate",
    "lr_scheduler": "lr_scheduler_type", "warmup_ratio": "warmup_steps", "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm", "optimizer": "optim", "max_length": "max_length", "packing": "packing",
    "gradient_checkpointing": "gradient_checkpointing", "bf16": "bf16", "seed": "seed",
    "logging_steps": "logging_steps", "eval_steps": "eval_steps", "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
}


@dataclass
class EvaluationConfig:
    """How models are asked: generation length and batch, and the sampled run's temperature and top-p."""

    max_new_tokens: int = 1024
    batch_size: int = 16
    temperature: float = 0.7  # of the sampled run; the main measurement is greedy
    top_p: float = 0.95
    seed: int = 0
    heldout_rows: int | None = None  # held-out rows of the mix asked per source (all when null)
    engine: str = "hf"  # hf (transformers generate) or vllm (used when installed, hf otherwise)
    adapter: str | None = None  # an adapter folder to evaluate instead of this profile's own SFT run

    def validate(self, key: str) -> None:
        _check(self.engine in ENGINES, f"{key}.engine", f"must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        _check(self.max_new_tokens > 0, f"{key}.max_new_tokens", f"must be positive, got {self.max_new_tokens}")
        _check(self.seed >= 0, f"{key}.seed", f"must be 0 or more, got {self.seed}")
        _check(self.batch_size > 0, f"{key}.batch_size", f"must be positive, got {self.batch_size}")
        _check(self.temperature > 0, f"{key}.temperature", f"must be positive, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"{key}.top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.heldout_rows is None or self.heldout_rows > 0, f"{key}.heldout_rows", "must be positive or null")


@dataclass
class ReinforcementConfig:
    """The project's own settings of the GRPO stage; the trainer's options are in ``grpo`` by TRL's names.

    Prompts are graded training rows of the mix, each asked in one of ``layouts`` (in turn). Before
    training, the SFT model answers each candidate ``difficulty_samples`` times at the GRPO
    temperature; prompts it always or never solves are dropped, since a group whose replies all
    earn the same reward teaches nothing.
    """

    rewards: list[str] = field(default_factory=lambda: ["correctness", "strict_format", "tag_structure", "shown_work", "overlong"])
    overlong_buffer: int = 64  # the overlong penalty starts this many tokens before grpo.max_completion_length
    sources: list[str] | None = None  # the mix's sources prompts come from (every graded one when null)
    candidates: int | None = 1024  # training rows whose difficulty is estimated (all when null)
    difficulty_samples: int = 4  # sampled replies per candidate; 0 keeps every candidate unmeasured
    layouts: list[str] = field(default_factory=lambda: ["project", "question_only", "seed"])
    adapter: str | None = None  # the SFT adapter GRPO continues (default: this profile's SFT run's)

    def validate(self, key: str) -> None:
        from workings.core.chat import PROMPT_LAYOUTS
        from workings.core.rewards import REWARD_NAMES

        _check(len(self.rewards) > 0, f"{key}.rewards", "needs at least one reward")
        unknown = [r for r in self.rewards if r not in REWARD_NAMES]
        _check(not unknown, f"{key}.rewards", f"unknown reward {unknown[0] if unknown else ''!r}; known: {', '.join(REWARD_NAMES)}")
        _check(len(set(self.rewards)) == len(self.rewards), f"{key}.rewards", "a reward is named twice")
        _check(self.overlong_buffer > 0, f"{key}.overlong_buffer", f"must be positive, got {self.overlong_buffer}")
        _check(self.candidates is None or self.candidates > 0, f"{key}.candidates", "must be positive or null")
        _check(self.difficulty_samples == 0 or self.difficulty_samples >= 2, f"{key}.difficulty_samples",
               f"must be 0 (no selection) or at least 2 (one sample cannot be both right and wrong), got {self.difficulty_samples}")
        _check(len(self.layouts) > 0, f"{key}.layouts", "needs at least one prompt layout")
        bad = [name for name in self.layouts if name not in PROMPT_LAYOUTS]
        _check(not bad, f"{key}.layouts", f"unknown layout {bad[0] if bad else ''!r}; known: {', '.join(PROMPT_LAYOUTS)}")


@dataclass
class Profile:
    name: str
    model: ModelConfig
    data: DataConfig
    description: str = ""
    quantization: QuantizationConfig | None = None
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sft: dict[str, Any] = field(default_factory=dict)  # trl.SFTConfig options, by TRL's names
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    reinforcement: ReinforcementConfig = field(default_factory=ReinforcementConfig)
    grpo: dict[str, Any] = field(default_factory=dict)  # trl.GRPOConfig options, by TRL's names
    path: Path | None = None  # the file it was read from; not a key in the file

    def validate(self, key: str = "") -> None:
        from workings.config.trainer_options import check_grpo_options, check_sft_options, optimizer_name

        self.model.validate("model")
        self.data.validate("data")
        if self.quantization is not None:
            self.quantization.validate("quantization")
            storage = self.quantization.quant_storage
            _check(storage is None or storage == self.model.dtype, "quantization.quant_storage",
                   f"{storage} differs from model.dtype ({self.model.dtype}); FSDP shards the base only when both agree")
            if self.training.fsdp:
                _check(self.quantization.bits == 4, "quantization.bits", "FSDP does not shard 8-bit weights; use 4 bits")
                _check(storage is not None, "quantization.quant_storage",
                       f"training.fsdp shards only floating-point weights: set it to model.dtype ({self.model.dtype})")
        self.lora.validate("lora")
        self.training.validate("training")
        self.evaluation.validate("evaluation")
        check_sft_options(self.sft)
        sft = self.sft_args()
        _check(sft.max_length is not None and sft.max_length >= self.data.max_length, "sft.max_length",
               f"{sft.max_length} is below data.max_length ({self.data.max_length}): rows the mix keeps would be cut")
        packs = [name for name in ("packing", "padding_free") if getattr(sft, name, False)]
        _check(not packs or self.model.attn_implementation in PACKING_SAFE_ATTENTION, f"sft.{packs[0] if packs else 'packing'}",
               f"packed examples attend to each other with {self.model.attn_implementation!r} attention; "
               f"packing needs one of {', '.join(PACKING_SAFE_ATTENTION)}")
        optim = optimizer_name(sft)
        if self.training.device == "cpu":
            _check(not optim.startswith("paged_"), "sft.optim", f"{optim} pages optimizer state through CUDA; use adamw_torch on cpu")
        self.reinforcement.validate("reinforcement")
        check_grpo_options(self.grpo)
        grpo = self.grpo_args()
        rewards = self.reinforcement.rewards
        _check(grpo.reward_weights is None or len(grpo.reward_weights) == len(rewards), "grpo.reward_weights",
               f"{len(grpo.reward_weights or [])} weights for {len(rewards)} rewards ({', '.join(rewards)})")
        if "overlong" in rewards:
            _check(self.reinforcement.overlong_buffer <= grpo.max_completion_length, "reinforcement.overlong_buffer",
                   f"{self.reinforcement.overlong_buffer} is longer than grpo.max_completion_length ({grpo.max_completion_length})")
        if self.training.device == "cpu":
            _check(not optimizer_name(grpo).startswith("paged_"), "grpo.optim", "paged optimizers need CUDA; use adamw_torch on cpu")

    def sft_args(self, **fixed: Any) -> Any:
        """The ``trl.SFTConfig`` of this profile: the ``sft`` section over the project's defaults.

        ``fixed`` holds what the run sets itself (``output_dir``, ``use_cpu``, …); without it the
        config is the one validation built, with a placeholder output folder.
        """
        from workings.config.trainer_options import sft_config

        return sft_config(self.sft, **fixed)

    def grpo_args(self, **fixed: Any) -> Any:
        """The ``trl.GRPOConfig`` of this profile: the ``grpo`` section over the project's defaults and
        what GRPO takes from the ``sft`` section (precision, checkpointing, optimizer, seed) unless it
        sets them itself; ``fixed`` as for :meth:`sft_args`."""
        from workings.config.trainer_options import grpo_config

        return grpo_config(self.grpo, self.sft, **fixed)


