"""The schema of params.yaml: every section's keys, types, ranges and choices.

``synthdrive.params.load()`` checks the whole file against it before a stage starts work, so a
bad value stops every stage with one line naming the param, the value and what is allowed::

    params.yaml: collect.height='abc' must be an integer >= 8
    params.yaml: collect.source='kitti' is unknown; choose one of: carla, folder, procedural
    params.yaml: unknown param 'collect.heigth'; collect has: carla, folder, height, ...

Validation is pydantic's, strict: an integer param refuses 3.7, '64' and true; a number refuses
true; unknown keys are refused. Keys may be left out here (a stage that reads a missing key says
``missing param ...`` when it reads it), except where a list entry needs them (a resplit rule's
``match``). Values are only checked, never converted: stages read the file as written.

Choices (collectors, backends, models) are written out below instead of imported from the
modules that define them: params.py imports this module, so every stage depends on it (dvc.yaml
deps), and importing the collectors or generators here would make every stage depend on those
too. tests/test_params.py checks that each list matches its module's.
"""
import re
import typing
from functools import cache
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, Required, TypedDict, is_typeddict

from synthdrive import labels
from synthdrive.conditions import TIMES_OF_DAY, USES, WEATHERS, Condition
from synthdrive.params import ParamError, resolve_path

SPLITS = ("train", "val", "test")                       # synthdrive.dataset.SPLITS
COLLECTORS = ("procedural", "folder", "carla")          # synthdrive.collect.COLLECTORS
FOLDER_LAYOUTS = ("split_dirs", "flat", "cityscapes")   # synthdrive.collect.folder
CONDITION_RULES = ("camvid", "unknown")                 # synthdrive.collect.folder.CONDITION_RULES
RENDER_DENSITIES = ("car_density", "pedestrian_density", "bicyclist_density", "tree_density",
                    "sign_density")                     # synthdrive.render RenderOptions
RENDER_PROBS = ("building_prob", "parking_prob", "crosswalk_prob")
SIGN_BACKENDS = ("procedural", "diffusers")             # synthdrive.signs.data.BACKENDS
SIGN_INITS = ("scratch", "imagenet")                    # synthdrive.signs.classifier.INITS
CLASSIFY_BACKENDS = ("heuristic", "effnet", "clip")     # synthdrive.classify.BACKENDS
EFFNET_VARIANTS = (0, 1, 2)                             # synthdrive.pretrained.VARIANTS
CAPTION_BACKENDS = ("template", "llava")                # synthdrive.caption.BACKENDS
SEGMENTER_MODELS = ("mask2former", "segformer", "fcn")  # synthdrive.segment.config.MODELS
SEGMENTER_BACKBONES = ("native", "efficientnet_lite0", "efficientnet_lite1",
                       "efficientnet_lite2")  # synthdrive.segment.config.BACKBONES
RESNET_DEPTHS = (18, 34, 50, 101, 152)
GENERATOR_BACKENDS = ("spade_gan", "sdm", "pix2pix", "vae", "controlnet")  # synthdrive.generate.BACKENDS
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")  # diffusers DDPMScheduler
DIST_BACKENDS = ("gloo", "nccl")


# --- leaf types: a pydantic type plus the words for what it allows ----------------------------

class Allowed:
    """Annotated metadata: what a value must be, in words (the end of its error line)."""

    def __init__(self, text: str, choices: tuple = ()):
        self.text, self.choices = text, tuple(choices)

    def __repr__(self) -> str:
        return f"Allowed({self.text!r})"


def _split(tp):
    """(bare type, Allowed or None) of an Annotated / NotRequired / Required type."""
    allowed = None
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            for m in tp.__metadata__:
                if isinstance(m, Allowed):
                    allowed = m
            tp = tp.__origin__
        elif origin in (NotRequired, Required):
            tp = typing.get_args(tp)[0]
        else:
            return tp, allowed


def _allowed(tp) -> Allowed | None:
    return _split(tp)[1]


def _fields(tp) -> dict | None:
    bare = _split(tp)[0]
    if isinstance(bare, type) and is_typeddict(bare):
        return typing.get_type_hints(bare, include_extras=True)
    return None


def _range(ge=None, gt=None, le=None, lt=None) -> str:
    low = f"[{ge}" if ge is not None else f"({gt}" if gt is not None else None
    high = f"{le}]" if le is not None else f"{lt})" if lt is not None else None
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" >= {ge}" if ge is not None else f" > {gt}"
    if high:
        return f" <= {le}" if le is not None else f" < {lt}"
    return ""


def Int(ge=None, le=None, multiple_of=None, text: str | None = None):
    words = text or "an integer" + _range(ge=ge, le=le) + (f" divisible by {multiple_of}" if multiple_of else "")
    return Annotated[int, Strict(), Field(ge=ge, le=le, multiple_of=multiple_of), Allowed(words)]


def Float(ge=None, gt=None, le=None, lt=None, text: str | None = None):
    words = text or "a number" + _range(ge, gt, le, lt)
    return Annotated[float, Strict(), Field(ge=ge, gt=gt, le=le, lt=lt, allow_inf_nan=False), Allowed(words)]


def Str(min_length: int = 0, text: str | None = None):
    words = text or ("a non-empty string" if min_length else "a string")
    return Annotated[str, Strict(), Field(min_length=min_length), Allowed(words)]


def Choice(*options):
    return Annotated[Literal[options], Allowed("one of: " + ", ".join(map(str, options)), options)]


def ListOf(item, min_length: int | None = None, max_length: int | None = None, text: str | None = None):
    if text is None:
        count = ("" if not min_length else f"{min_length}" if min_length == max_length else
                 f"at least {min_length}" if not max_length else f"{min_length} to {max_length}")
        text = f"a list of {count + ' ' if count else ''}{describe(item)}"
    return Annotated[list[item], Field(min_length=min_length, max_length=max_length), Allowed(text)]


def MapOf(key, value, min_length: int | None = None, text: str | None = None):
    text = text or f"a mapping of {describe(key)} to {describe(value)}"
    return Annotated[dict[key, value], Field(min_length=min_length), Allowed(text)]


def Nullable(tp, text: str | None = None):
    return Annotated[Optional[tp], Allowed(text or f"null or {describe(tp)}")]


def OneOf(*types, text: str):
    return Annotated[Union[types], Allowed(text)]


def describe(tp) -> str:
    allowed = _allowed(tp)
    return allowed.text if allowed else "a mapping"


def _condition(text: str) -> str:
    Condition.parse(text)  # ValueError on a bad name
    return text


def _template(*fields: str, positional: bool = False):
    """A str.format template: fills with ``fields`` (or one positional {}) and nothing else."""
    def check(text: str) -> str:
        try:
            filled = text.format("x") if positional else text.format(**{f: "x" for f in fields})
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"bad template ({e})") from None
        if filled == text.replace("{{", "{").replace("}}", "}"):
            raise ValueError("no placeholder")
        return text
    return check


CONDITION_TEXT = (f"a condition WEATHER-TIME (WEATHER: {', '.join(WEATHERS)}; "
                  f"TIME: {', '.join(TIMES_OF_DAY)}), e.g. rain-night")
ConditionName = Annotated[str, Strict(), AfterValidator(_condition), Allowed(CONDITION_TEXT)]
Size = Int(ge=8)                         # image heights and widths
Count = Int(ge=1)                        # batch sizes, iterations, threads, ...
Natural = Int(ge=0)                      # counts where 0 means none / off
Seed = Int(ge=0)
Prob = Float(ge=0, le=1)
Positive = Float(gt=0)
NonNegative = Float(ge=0)
Weight = Float(ge=0, text="a number >= 0 (0 leaves the condition out)")


def _some_weight(mix: dict) -> dict:
    if not any(w > 0 for w in mix.values()):
        raise ValueError("every weight is 0")
    return mix


# `dvc exp run -S` merges a mapping into params.yaml's, so an override drops a key by zeroing it.
Mix = Annotated[dict[ConditionName, Weight], Field(min_length=1), AfterValidator(_some_weight),
                Allowed("a mapping of conditions to weights >= 0, at least one > 0, "
                        "e.g. {clear-day: 0.7, rain-night: 0.3}")]
Device = Annotated[str, Strict(), Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$"),
                   Allowed("auto, cpu, cuda or cuda:N")]
OptionalPath = Nullable(Str(min_length=1), text="null or a path (a non-empty string)")


# --- input paths: the data and weights a param names ------------------------------------------
# dvc.yaml lists each InputPath param as a dep (``${param}``) of the stages that read it, so new or
# changed files there rerun them (tests/test_dvc_deps.py checks this). DVC refuses a dep that does
# not exist and cannot leave one out, so such a param always names something: UNSET, the empty
# git-tracked folder unset/ at the repo root, until it is pointed at real data ('' or null would
# break every dvc command).
UNSET = "unset"


class DvcDep:
    """Annotated metadata: the param names a file or folder that dvc.yaml lists as a dep."""

    def __repr__(self) -> str:
        return "DvcDep()"


def InputPath(what: str):
    return Annotated[str, Strict(), Field(min_length=1), DvcDep(),
                     Allowed(f"{what} (relative: to the repo root), or '{UNSET}' for none")]


def is_unset(value) -> bool:
    """Whether a path param names nothing yet: UNSET (however written: 'unset', './unset', its
    absolute path), or from Python callers None or ''."""
    return value is None or value == "" or resolve_path(value) == resolve_path(UNSET)


LabelId = Int(ge=0, le=255)
Channels = ListOf(Count, min_length=1, text="a non-empty list of integers >= 1")
Betas = ListOf(Float(ge=0, lt=1), min_length=2, max_length=2, text="a list of 2 numbers in [0, 1)")
Conditions = ListOf(ConditionName, text=f"a list of conditions WEATHER-TIME (WEATHER: {', '.join(WEATHERS)}; "
                                        f"TIME: {', '.join(TIMES_OF_DAY)})")
AutoOrConditions = OneOf(Literal["auto"], Conditions, text=f"'auto' or {Conditions.__metadata__[-1].text}")
Threads = OneOf(Literal["auto"], Count, text="'auto' (the cores shared among the jobs running at once) "
                                               "or an integer >= 1")


def section(cls):
    """A params section: a mapping with exactly these keys (each may be left out)."""
    return with_config(ConfigDict(extra="forbid", strict=True))(cls)


# --- labels, collect ----------------------------------------------------------------------------

@section
class LabelsParams(TypedDict, total=False):
    space: Choice(*labels.names())


@section
class FramesParams(TypedDict, total=False):
    train: Natural
    val: Natural
    test: Natural


RenderParams = section(TypedDict("RenderParams", {**{k: NonNegative for k in RENDER_DENSITIES},
                                                  **{k: Prob for k in RENDER_PROBS}}, total=False))


@section
class ProceduralParams(TypedDict, total=False):
    frames: FramesParams
    train_mix: Mix
    render: RenderParams


@section
class ResplitRule(TypedDict):
    match: Str(min_length=1, text="a glob '<split>/<file stem glob>', e.g. 'train/0001TP_008*'")
    split: Choice(*SPLITS)


@section
class FolderParams(TypedDict, total=False):
    path: InputPath("a path to the dataset folder")
    layout: Choice(*FOLDER_LAYOUTS)
    flat_split: Choice(*SPLITS)
    label_space: Choice(*labels.names())
    label_map: MapOf(LabelId, LabelId, text="a mapping of label ids 0..255 to label ids 0..255 "
                                            "(255 = ignore), e.g. {11: 255}")
    ignore_ids: ListOf(LabelId, text="a list of label ids 0..255")
    condition_rule: Choice(*CONDITION_RULES)
    resplit: ListOf(Annotated[ResplitRule, Allowed("a rule {match: '<split>/<file stem glob>', "
                                                   "split: train|val|test}")],
                    text="a list of rules {match: '<split>/<file stem glob>', split: train|val|test}")


@section
class CameraParams(TypedDict, total=False):
    x: Float()
    z: Float()
    pitch: Float(ge=-90, le=90)
    fov: Float(gt=0, lt=180)


@section
class EpisodeParams(TypedDict, total=False):
    weather: Required[OneOf(Str(min_length=1), MapOf(Str(min_length=1), Float()), text=(
        "a weather preset name (synthdrive/collect/carla_weather.yaml) or a mapping of "
        "carla.WeatherParameters fields to numbers"))]
    condition: ConditionName
    split: Choice(*SPLITS)
    frames: Count


Port = Int(ge=1, le=65535)


@section
class CarlaParams(TypedDict, total=False):
    host: Str(min_length=1)
    port: Port
    timeout: Positive
    town: Nullable(Str(min_length=1), text="null or a map name, e.g. Town10HD_Opt")
    traffic_manager_port: Port
    fixed_delta_seconds: Positive
    warmup_ticks: Natural
    save_every: Count
    sensor_timeout: Positive
    vehicles: Natural
    walkers: Natural
    ego_blueprint: Str(min_length=1)
    camera: CameraParams
    frames_per_episode: Count
    episodes: ListOf(Annotated[EpisodeParams, Allowed("an episode {weather: PRESET, split: train}")],
                     min_length=1, text="a non-empty list of episodes {weather: PRESET, split: train}")


@section
class CollectParams(TypedDict, total=False):
    source: Choice(*COLLECTORS)
    height: Size
    width: Size
    seed: Seed
    procedural: ProceduralParams
    folder: FolderParams
    carla: CarlaParams


# --- signs ----------------------------------------------------------------------------------------

@section
class SignCounts(TypedDict, total=False):
    train: Count
    val: Count
    shifted: Count


@section
class SignBackgrounds(TypedDict, total=False):
    street_fraction: Prob
    frames_per_condition: Count
    height: Size
    width: Size


@section
class SignPrompts(TypedDict, total=False):
    stop: Str(min_length=1)
    warning: Str(min_length=1)


DiffusionSize = Int(ge=8, multiple_of=8)


@section
class SignDiffusers(TypedDict, total=False):
    model_dir: InputPath("a local diffusers pipeline folder (model_index.json)")
    prompts: SignPrompts
    steps: Count
    guidance: NonNegative
    height: DiffusionSize
    width: DiffusionSize
    batch: Count
    device: Device


@section
class SignData(TypedDict, total=False):
    backend: Choice(*SIGN_BACKENDS)
    seed: Seed
    size: Size
    render_size: Size
    counts: SignCounts
    conditions: Mix
    backgrounds: SignBackgrounds
    diffusers: SignDiffusers


@section
class SignImagenet(TypedDict, total=False):
    variant: Choice(*EFFNET_VARIANTS)
    input_size: Size
    epochs: Count
    lr: Positive


@section
class SignTrain(TypedDict, total=False):
    init: Choice(*SIGN_INITS)
    input_size: Size
    imagenet: SignImagenet
    epochs: Count
    lr: Positive
    batch: Count
    seed: Seed
    threads: Threads


@section
class SignsParams(TypedDict, total=False):
    real_dir: Str(text="a folder with stop/ and warning/ subfolders, or '' for the procedural test set")
    data: SignData
    train: SignTrain


# --- report, classify, caption --------------------------------------------------------------------

@section
class ReportParams(TypedDict, total=False):
    image_max_width: Count
    caption_examples: Natural
    synthesis_examples: Natural
    experiment_metric_columns: Natural
    headline_metrics: ListOf(Str(min_length=1), text="a list of 'file:key' patterns (strings)")


@section
class HeuristicParams(TypedDict, total=False):
    model: InputPath("a heuristic.json fit elsewhere (unset: fit on the train split)")
    l2: NonNegative
    iterations: Count
    cv_folds: Natural
    min_group: Natural


@section
class EffnetParams(TypedDict, total=False):
    model: InputPath("an effnet.json fit elsewhere (unset: fit on the train split)")
    variant: Choice(*EFFNET_VARIANTS)
    pretrained: Annotated[bool, Strict(), Allowed("true or false")]
    height: Size
    width: Size
    layer: Choice("head", "stages")
    image_stats: Annotated[bool, Strict(), Allowed("true or false")]
    standardise: Choice("train", "domain")
    l2: NonNegative
    iterations: Count
    cv_folds: Natural
    min_group: Natural


ClipPrompt = Annotated[str, Strict(), AfterValidator(_template(positional=True)),
                       Allowed("a text with one {} where the word goes")]


@section
class ClipPrompts(TypedDict, total=False):
    weather: ClipPrompt
    time_of_day: ClipPrompt


@section
class ClipWords(TypedDict, total=False):
    weather: MapOf(Choice(*WEATHERS), Str(min_length=1),
                   text=f"a mapping of weathers ({', '.join(WEATHERS)}) to words")
    time_of_day: MapOf(Choice(*TIMES_OF_DAY), Str(min_length=1),
                       text=f"a mapping of times of day ({', '.join(TIMES_OF_DAY)}) to words")


@section
class ClipParams(TypedDict, total=False):
    model_dir: InputPath("a local CLIP folder (save_pretrained)")
    device: Device
    batch_size: Count
    prompts: ClipPrompts
    words: ClipWords


@section
class ClassifyParams(TypedDict, total=False):
    backend: Choice(*CLASSIFY_BACKENDS)
    use: Choice(*USES)
    batch_size: Count
    heuristic: HeuristicParams
    effnet: EffnetParams
    clip: ClipParams


@section
class TemplateParams(TypedDict, total=False):
    min_area: Prob
    max_classes: Count
    near_m: Positive
    far_m: Positive


@section
class LlavaParams(TypedDict, total=False):
    model_dir: InputPath("a local LLaVA folder (save_pretrained)")
    query: Annotated[str, Strict(), AfterValidator(_template("classes")),
                     Allowed("a text with {classes} where the class list goes (and no other {...})")]
    max_new_tokens: Count
    temperature: NonNegative
    batch_size: Count
    load_in_4bit: Annotated[bool, Strict(), Allowed("true or false")]
    device: Device
    seed: Seed


@section
class CaptionParams(TypedDict, total=False):
    backend: Choice(*CAPTION_BACKENDS)
    batch_size: Count
    template: TemplateParams
    llava: LlavaParams


# --- segmenter, filter_synthetic, evaluate --------------------------------------------------------

Bool = Annotated[bool, Strict(), Allowed("true or false")]


@section
class Mask2FormerParams(TypedDict, total=False):
    depth: Choice(*RESNET_DEPTHS)
    channels: Count
    heads: Count
    ffn_channels: Count
    num_queries: Count
    encoder_layers: Count
    decoder_layers: Count
    num_points: Count


@section
class SegformerParams(TypedDict, total=False):
    channels: Count


@section
class FcnParams(TypedDict, total=False):
    depth: Choice(*RESNET_DEPTHS)
    channels: Count


@section
class SegmenterModel(TypedDict, total=False):
    name: Choice(*SEGMENTER_MODELS)
    backbone: Choice(*SEGMENTER_BACKBONES)
    pretrained: Bool
    backbone_lr_mult: OneOf(Literal["auto"], Positive,
                            text="'auto' (0.1 with pretrained: true, else 1) or a number > 0")
    backbone_checkpoint: OptionalPath
    mask2former: Mask2FormerParams
    segformer: SegformerParams
    fcn: FcnParams


@section
class SegmenterTrain(TypedDict, total=False):
    iters: Count
    batch_size: Count
    lr: Positive
    weight_decay: NonNegative
    grad_clip: NonNegative
    scale_range: ListOf(Positive, min_length=2, max_length=2, text="a list [low, high] of 2 numbers > 0")
    photometric_distortion: Bool
    num_workers: Natural
    threads: Threads
    nproc: Count
    resume: Bool
    log_interval: Count
    checkpoint_interval: Count
    val_interval: Natural
    mlflow_vis_backend: Bool
    dist_backend: Choice(*DIST_BACKENDS)


@section
class SegmenterMix(TypedDict, total=False):
    ratio: Float(ge=0, lt=1)


@section
class RealAugParams(TypedDict, total=False):
    targets: AutoOrConditions


@section
class SegmenterParams(TypedDict, total=False):
    seeds: ListOf(Seed, min_length=1, text="a non-empty list of seeds (integers >= 0)")
    height: Size
    width: Size
    model: SegmenterModel
    train: SegmenterTrain
    mix: SegmenterMix
    real_aug: RealAugParams


@section
class FilterParams(TypedDict, total=False):
    min_miou: Float(ge=0, le=100, text="a mIoU in percent, in [0, 100]")
    ignore_classes: ListOf(Str(min_length=1), text="a list of class names of labels.space")
    batch_size: Count
    threads: Threads


@section
class FidParams(TypedDict, total=False):
    features: Choice("efficientnet_lite0", "segmenter", "inception")  # segment.evaluate.FID_FEATURES
    inception_weights: InputPath("a pt_inception-2015-12-05 weights file")
    height: Size
    width: Size
    max_frames: Int(ge=2)
    kid_subset_size: Int(ge=2)


@section
class EvaluateParams(TypedDict, total=False):
    split: Choice(*SPLITS)
    rare_conditions: AutoOrConditions
    batch_size: Count
    threads: Threads
    grid_frames: Natural
    fid: FidParams


# --- generator, synthesize ------------------------------------------------------------------------

@section
class SpadeGanParams(TypedDict, total=False):
    iterations: Count
    batch_size: Count
    channels: Channels
    spade_hidden: Count
    z_dim: Count
    cond_dim: Count
    d_channels: Count
    d_layers: Count
    d_scales: Count
    lr_g: Positive
    lr_d: Positive
    betas: Betas
    l1_weight: NonNegative
    fm_weight: NonNegative
    perceptual_weight: NonNegative
    ema_decay: Prob


@section
class Pix2PixParams(TypedDict, total=False):
    iterations: Count
    batch_size: Count
    channels: Channels
    z_dim: Count
    cond_dim: Count
    dropout: Float(ge=0, lt=1)
    dropout_levels: Natural
    d_channels: Count
    d_layers: Count
    lr_g: Positive
    lr_d: Positive
    betas: Betas
    l1_weight: NonNegative
    perceptual_weight: NonNegative
    ema_decay: Prob


@section
class VaeParams(TypedDict, total=False):
    iterations: Count
    batch_size: Count
    channels: Channels
    spade_hidden: Count
    z_dim: Count
    cond_dim: Count
    encoder_channels: Channels
    kl_weight: NonNegative
    perceptual_weight: NonNegative
    lr: Positive
    ema_decay: Prob


@section
class SdmParams(TypedDict, total=False):
    iterations: Count
    batch_size: Count
    channels: Channels
    layers_per_block: Count
    spade_hidden: Count
    groups: Count
    lr: Positive
    weight_decay: NonNegative
    uncond_prob: Prob
    train_timesteps: Count
    beta_schedule: Choice(*BETA_SCHEDULES)
    ema_decay: Prob
    device: Device


@section
class ControlNetParams(TypedDict, total=False):
    base_model_dir: InputPath("a local Stable Diffusion pipeline folder (model_index.json)")
    controlnet_dir: InputPath("a local ControlNet folder (config.json)")
    height: DiffusionSize
    width: DiffusionSize
    device: Device


@section
class GeneratorParams(TypedDict, total=False):
    backend: Choice(*GENERATOR_BACKENDS)
    height: Size
    width: Size
    seed: Seed
    resume: Bool
    sample_every: Count
    checkpoint_every: Count
    eval_frames: Natural
    diversity_seeds: Int(ge=2)
    nproc: Count
    threads: Threads
    spade_gan: SpadeGanParams
    pix2pix: Pix2PixParams
    vae: VaeParams
    sdm: SdmParams
    controlnet: ControlNetParams


@section
class SdmSampler(TypedDict, total=False):
    steps: Count
    eta: Prob
    guidance: NonNegative


@section
class ControlNetSampler(TypedDict, total=False):
    steps: Count
    guidance: NonNegative
    conditioning_scale: NonNegative
    eta: Prob
    negative_prompt: Str()


@section
class SynthesizeParams(TypedDict, total=False):
    count: Count
    target_mix: OneOf(Literal["uniform"], Mix, text="'uniform' or a mapping of conditions to weights >= 0, "
                                                    "e.g. {rain-night: 1, fog-day: 1}")
    source_min_share: Prob
    seed: Seed
    batch_size: Count
    shard_index: Natural
    shard_count: Count
    sdm: SdmSampler
    controlnet: ControlNetSampler


@section
class ParamsFile(TypedDict, total=False):
    labels: LabelsParams
    collect: CollectParams
    signs: SignsParams
    report: ReportParams
    classify: ClassifyParams
    caption: CaptionParams
    segmenter: SegmenterParams
    filter_synthetic: FilterParams
    evaluate: EvaluateParams
    generator: GeneratorParams
    synthesize: SynthesizeParams


# --- checking and messages --------------------------------------------------------------------------

@cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(ParamsFile)


def validate(data: Any, file: str = "params.yaml") -> None:
    """Raise one ParamError line for the first bad value of a parsed params file."""
    try:
        _adapter().validate_python(data)
    except ValidationError as e:
        raise ParamError(message(e.errors(), data, file)) from None
    _cross_checks(data, file)


def _walk(loc: tuple, node=None):
    """Follow an error's ``loc`` through the schema from ``node`` (default: the whole file):
    (node reached, locs consumed, whether the last one is a mapping key)."""
    node, i = ParamsFile if node is None else node, 0
    while i < len(loc):
        fields = _fields(node)
        bare = _split(node)[0]
        origin = typing.get_origin(bare)
        if fields is not None:
            if loc[i] not in fields:
                break
            node = fields[loc[i]]
        elif origin is list:
            node = typing.get_args(bare)[0]
        elif origin is dict:
            key_type, value_type = typing.get_args(bare)
            if i + 1 < len(loc) and loc[i + 1] == "[key]":
                return key_type, i + 1, True
            node = value_type
        else:  # a union (its words cover every member) or a leaf
            break
        i += 1
    return node, i, False


def _union_member(node, tag):
    """The list or mapping member of a union that pydantic's loc ``tag`` names."""
    bare = _split(node)[0]
    if typing.get_origin(bare) is not Union or not isinstance(tag, str):
        return None
    tag = re.sub(r"^function-\w+\[\w+\(\), ", "", tag)  # a member with a validator (Mix)
    for member in typing.get_args(bare):
        origin = typing.get_origin(_split(member)[0])
        if (origin is list and tag.startswith("list[")) or (origin is dict and tag.startswith("dict[")):
            return member
    return None


def _locate(errors: list[dict]):
    """The error to report, its loc without pydantic's union tags, the schema node it reached, how
    many locs lead there and whether the last is a mapping key. At a union (e.g. 'auto' or a list)
    a value of a member's shape (a list) is reported inside that member (its bad item)."""
    err = errors[0]
    loc = tuple(err["loc"])
    node, n, on_key = _walk(loc)
    for other in errors:
        other_loc = tuple(other["loc"])
        if other_loc[:n] == loc[:n] and len(other_loc) > n + 1:
            member = _union_member(node, other_loc[n])
            if member is not None:
                rest = other_loc[n + 1:]
                sub, m, sub_key = _walk(rest, member)
                return other, loc[:n] + rest, sub, n + m, sub_key
    return err, loc, node, n, on_key


def _dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _value_at(data, loc):
    for part in loc:
        data = data[part]
    return data


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def message(errors: list[dict], data: Any, file: str) -> str:
    """One line for pydantic's errors of ``data``: the first one's param, value and what is allowed."""
    err, loc, node, n, on_key = _locate(errors)
    path = _dotted(loc[:n])
    if err["type"] == "extra_forbidden":
        parent = _dotted(loc[:n])
        known = ", ".join(sorted(_fields(node) or ()))
        name = _dotted(loc[:n + 1])
        where = f"{parent} has" if parent else "sections are"
        return f"{file}: unknown param '{name}'; {where}: {known}"
    if err["type"] == "missing":
        return (f"{file}: missing param '{_dotted(loc)}'; add it (see the README's params table or the "
                f"repo's params.yaml)")
    if on_key:
        key = loc[n - 1]
        return f"{file}: {_dotted(loc[:n - 1])} has key {key!r}, which must be {describe(node)}"
    value = _value_at(data, loc[:n])
    if not path:
        return f"{file} must be a mapping of sections ({', '.join(_fields(ParamsFile))}), not {_show(value)}"
    allowed = _allowed(node)
    if allowed is not None and allowed.choices:
        choices = sorted(allowed.choices, key=lambda c: (isinstance(c, str), c))
        return f"{file}: {path}={_show(value)} is unknown; choose one of: {', '.join(map(str, choices))}"
    if allowed is None and _fields(node) is not None:
        return f"{file}: {path}={_show(value)} must be a mapping with keys among: {', '.join(sorted(_fields(node)))}"
    return f"{file}: {path}={_show(value)} must be {describe(node)}"


def _get(data: dict, dotted: str, default=None):
    node = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _cross_checks(data: dict, file: str) -> None:
    """Rules between params (the types are already right)."""
    index, count = _get(data, "synthesize.shard_index"), _get(data, "synthesize.shard_count")
    if index is not None and count is not None and index >= count:
        raise ParamError(f"{file}: synthesize.shard_index={index} must be an integer in 0..shard_count-1 "
                         f"(synthesize.shard_count={count})")
    scale = _get(data, "segmenter.train.scale_range")
    if scale is not None and scale[0] > scale[1]:
        raise ParamError(f"{file}: segmenter.train.scale_range={scale!r} must be [low, high] with low <= high")
    near, far = _get(data, "caption.template.near_m"), _get(data, "caption.template.far_m")
    if near is not None and far is not None and near > far:
        raise ParamError(f"{file}: caption.template.near_m={near!r} must be <= caption.template.far_m ({far!r})")
    space = _get(data, "labels.space")
    ignore = _get(data, "filter_synthetic.ignore_classes")
    if space is not None and ignore:
        classes = labels.get(space).classes
        for i, name in enumerate(ignore):
            if name not in classes:
                raise ParamError(f"{file}: filter_synthetic.ignore_classes[{i}]={name!r} is unknown; choose "
                                 f"one of the classes of labels.space={space}: {', '.join(classes)}")


# --- data paths a stage needs -----------------------------------------------------------------------

def check_paths(data: dict, sections, file: str = "params.yaml") -> None:
    """The data paths under ``sections`` (dotted prefixes, e.g. 'collect') exist, checked before the
    stage starts work. Relative paths are relative to the repo root (``params.repo_root()``)."""
    def wanted(param: str) -> bool:
        return any(param == s or param.startswith(s + ".") or s == "" for s in sections)

    folder = _get(data, "collect.folder.path")
    if wanted("collect.folder.path") and _get(data, "collect.source") == "folder" and folder:
        path = resolve_path(folder)
        if is_unset(folder):
            raise ParamError(f"{file}: collect.folder.path={folder!r} names no dataset ({UNSET}/ is the "
                             f"empty placeholder); point it at the dataset folder, e.g. ../shared/data/camvid")
        if not path.is_dir():
            raise ParamError(f"{file}: collect.folder.path={folder!r} ({path}) is not a folder; "
                             f"point it at the dataset")
    real_dir = _get(data, "signs.real_dir")
    if wanted("signs.real_dir") and real_dir:
        path = resolve_path(real_dir)
        if not path.is_dir():
            raise ParamError(f"{file}: signs.real_dir={real_dir!r} ({path}) is not a folder; point it at a "
                             f"folder with stop/ and warning/ subfolders, or set it to '' for the "
                             f"procedural test set")
    backend = _get(data, "classify.backend", "heuristic")
    model = _get(data, f"classify.{backend}.model") if backend in ("heuristic", "effnet") else None
    if wanted(f"classify.{backend}.model") and not is_unset(model):
        path = resolve_path(model)
        if not path.is_file():
            raise ParamError(f"{file}: classify.{backend}.model={model!r} ({path}) is not a file; point "
                             f"it at a {backend}.json written by the classify stage, or set it to {UNSET} to "
                             f"fit on this dataset's train split")


def input_paths() -> list[str]:
    """The dotted names of the InputPath params (the schema's order): what dvc.yaml lists as deps."""
    found: list[str] = []

    def walk(node, name: str) -> None:
        fields = _fields(node)
        if fields is not None:
            for key, sub in fields.items():
                walk(sub, f"{name}.{key}" if name else key)
        elif typing.get_origin(node) is Annotated and any(isinstance(m, DvcDep) for m in node.__metadata__):
            found.append(name)

    walk(ParamsFile, "")
    return found
