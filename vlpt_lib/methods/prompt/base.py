"""What every prompt method shares: the run fields of a prompt job, Dassl's training recipe fields, and the
class a method subclasses.

A method's module (one file in this package, or a user's file named in $VLPT_PLUGINS) defines:
- `Recipe`: a pydantic model, `PromptRun` (or `DasslRecipe` when it trains) with `method: Literal["<name>"]`
  and its paper's official values as defaults, each field's `description` naming its source;
- the method class: a `PromptMethod` subclass with `name`, `Recipe`, `color`, and its rule for logits
  (and, when it adds a loss term, `training_loss`), registered with `@register`. Everything it learns lives
  in `prompt_learner` (`build_learner`: the optimizer steps it, the checkpoint holds it); what it reads from
  the frozen CLIP goes through PromptCLIP's small interface (encode_images, logit_scale, zeroshot_weights,
  encode_prompts, shared_text_features).
The prompt job validates a cfg against the union of the registered `Recipe`s, discriminated by `method`.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...models.prompt import PromptCLIP
from ...utils.fields import Count, Device, Index, NonNegative, Positive, Precision, Probability

COOP = "CoOp configs/trainers/{CoCoOp,CoOp}/vit_b16_*ctxv1.yaml"
DASSL_DEFAULTS = "Dassl config/defaults.py"


class ClipSpec(BaseModel):
    """The frozen CLIP: an open_clip model name + a tag or weights file (vlpt_lib.models.clip.load_clip)."""
    model_config = ConfigDict(extra="forbid")
    model_name: str = Field("ViT-B-16", description=f"{COOP} MODEL.BACKBONE.NAME ViT-B/16")
    pretrained: str | None = Field("openai", description="OpenAI's weights (CoOp clip/clip.py _MODELS): an "
                                                         "open_clip tag or a local file")
    quick_gelu: bool | None = Field(None, description="workbook parameter clip_quick_gelu (the profile's: paper "
                                                      "True, OpenAI CLIP's QuickGELU, CoOp clip/model.py); None: the "
                                                      "tag's open_clip cfg (openai: True)")


class EvalTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="workbook parameter (targets / variants)")
    subsample: Literal["all", "base", "new"] = Field("all", description="CoOp scripts/cocoop/base2new_test.sh "
                                                                        "DATASET.SUBSAMPLE_CLASSES")
    split: str | None = Field(None, description="workbook parameter: the rows' split label (None: base/new/test)")

    def label(self) -> str:
        return self.split or (self.subsample if self.subsample in ("base", "new") else "test")


class PromptRun(BaseModel):
    """The fields of every prompt run, whatever the method: what to train and test on, and how to run.
    Sources: CoOp scripts/cocoop/base2new_train.sh, xd_train.sh (16 shots, seeds 1 2 3)."""
    model_config = ConfigDict(extra="forbid")
    method: str = Field(description="workbook parameter (methods): a registered vlpt_lib.methods.prompt name")
    data_root: str = Field(description="workbook parameter: the folder holding imagenet/, caltech-101/, ...")
    clip: ClipSpec = ClipSpec()
    # what to train on
    dataset: str = Field("Caltech101", description="workbook parameter (datasets / source)")
    subsample: Literal["all", "base", "new"] = Field(
        "base", description="CoOp scripts/cocoop/base2new_train.sh DATASET.SUBSAMPLE_CLASSES base (xd_train.sh: all)")
    shots: Count = Field(16, description="CoOp scripts/cocoop/base2new_train.sh, xd_train.sh SHOTS=16")
    seed: Index = Field(1, description="workbook parameter (seeds; CoOp's scripts run 1, 2, 3)")
    eval: list[EvalTarget] | None = Field(
        None, description="workbook parameter: None = base + new of `dataset` (base2new_test.sh), else these sets")
    allow_folder_split: bool = Field(
        False, description="[A] official split_zhou_<Name>.json only (CoOp DATASETS.md); True: your own data "
                           "split from class folders, rows labelled '(folder split)'")
    test_batch_size: Count = Field(100, description=f"{COOP} DATALOADER.TEST.BATCH_SIZE 100")
    # how to run
    precision: Precision = Field("auto", description="[env] CPU fp32, CUDA bf16 autocast with fp32 weights (CoOp "
                                                     "TRAINER.*.PREC fp16: CLIP in half precision)")
    device: Device = Field("auto", description="[env] auto: CUDA when present")
    num_workers: Index = Field(0, description="[env] data-loading workers (CoOp configs: 8)")
    threads: Count | None = Field(None, description="[env] CPU threads (None: torch's default)")
    text_chunk: Count | None = Field(None, description="[env] most prompts per text-encoder pass (bounds memory; "
                                                       "exact; None: 8192 on a GPU, 128 on a CPU)")
    load_from: str | None = Field(None, description="[env] a finished run folder of this job: evaluate its "
                                                    "prompts, no training")
    # caps (the paper profile's dry run: `reproduce --profile paper --dry-run`); None = the recipe's
    max_steps: Count | None = Field(None, description="[cap] stop training after this many steps (None: all epochs)")
    max_test_images: Count | None = Field(None, description="[cap] images evaluated per test set, a seeded draw "
                                                            "(None: all)")


class DasslRecipe(PromptRun):
    """The training recipe of a Dassl prompt trainer (SGD, constant warm-up, cosine per epoch). The values
    here are Dassl's defaults; a method's Recipe sets its own config's values with their sources."""
    n_ctx: Count = Field(4, description="N_CTX (with ctx_init: its word count)")
    ctx_init: str | None = Field("a photo of a", description=f"{COOP} CTX_INIT ('' : random N(0, 0.02))")
    epochs: Count = Field(10, description="OPTIM.MAX_EPOCH")
    batch_size: Count = Field(32, description=f"{DASSL_DEFAULTS} DATALOADER.TRAIN_X.BATCH_SIZE (global); partial "
                                              "last batch dropped if a full one exists (Dassl build_data_loader)")
    lr: Positive = Field(0.002, description=f"{COOP} OPTIM.NAME sgd, LR 0.002, LR_SCHEDULER cosine (per epoch)")
    momentum: Probability = Field(0.9, description=f"{DASSL_DEFAULTS} OPTIM.MOMENTUM 0.9, SGD_NESTEROV False, "
                                                   "SGD_DAMPNING 0")
    weight_decay: NonNegative = Field(5e-4, description=f"{DASSL_DEFAULTS} OPTIM.WEIGHT_DECAY 5e-4 (every learned "
                                                        "parameter)")
    warmup_epochs: Index = Field(1, description=f"{COOP} OPTIM.WARMUP_EPOCH 1, constant; {DASSL_DEFAULTS} "
                                                "WARMUP_RECOUNT True (cosine starts after it)")
    warmup_lr: NonNegative = Field(1e-5, description=f"{COOP} OPTIM.WARMUP_CONS_LR 1e-5")
    augment: bool = Field(True, description=f"{COOP} INPUT.TRANSFORMS random_resized_crop, random_flip, normalize")
    crop_scale: tuple[Probability, Probability] = Field(
        (0.08, 1.0), description=f"{DASSL_DEFAULTS} INPUT.RRCROP_SCALE (0.08, 1.0)")

    # The method's official values for the cross-dataset and domain-generalisation protocol (trained on every
    # class of the source: subsample "all"), where its code has a config of its own for it; a value the run
    # sets itself wins.
    transfer_config: ClassVar[dict] = {}

    @model_validator(mode="before")
    @classmethod
    def _transfer_protocol(cls, data):
        if isinstance(data, dict) and cls.transfer_config and data.get("subsample") == "all":
            return {**cls.transfer_config, **data}
        return data


class PromptMethod(PromptCLIP):
    """A prompt method: PromptCLIP + its name, recipe, plot colour and its rule for logits (and loss)."""

    name: ClassVar[str]
    Recipe: ClassVar[type[PromptRun]]
    color: ClassVar[str | None] = None
    trains: ClassVar[bool] = True   # False: zero-shot (no training, one run per dataset, no seed spread)
    order: ClassVar[float] = 100    # where it stands in tables and figures (the built-in ones: by year)
    # its paper's findings, checked on our numbers: (table, text, left, op, right), sides as in
    # workbook.claims (e.g. ("cocoop_base2new", "... better on new classes", "X new", ">", "CoOp new"))
    claims: ClassVar[tuple[tuple[str, str, str, str, str], ...]] = ()
    # its own hand-written prompt per dataset where its official code differs from CoOp's zero-shot template
    templates: ClassVar[dict[str, str]] = {}

    @classmethod
    def template_for(cls, dataset: str, default: str) -> str:
        """The hand-written prompt this method uses on `dataset` (`default`: CoOp's, data.coop's template)."""
        return cls.templates.get(dataset, default)

    @classmethod
    def model_kwargs(cls, recipe: PromptRun) -> dict:
        """The constructor arguments this method takes from its resolved recipe (beyond CLIP and tokenizer):
        a DasslRecipe's context; nothing from a plain PromptRun (a zero-shot method)."""
        if not isinstance(recipe, DasslRecipe):
            return {}
        return {"n_ctx": recipe.n_ctx, "ctx_init": recipe.ctx_init or None, "seed_ctx": recipe.seed}
