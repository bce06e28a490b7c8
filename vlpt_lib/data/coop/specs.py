"""The CoOp dataset registry: where each dataset lives under the data root, its on-disk kind, its prompt
template and its split file (CoOp's DATASETS.md), looked up by name or alias.

Kept apart from the readers because the data check (00_setup), the paper-shaped world and the workbook
need only these facts, never an image: what to look for, what its layout is, how to name a folder split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
OFFICIAL_SPLITS = "CoOp's DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"
FOLDER_SPLIT_NOTE = " (folder split)"  # appended to a dataset's name when its split was drawn from folders


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    dataset_dir: str            # folder under the data root
    image_dir: str              # folder under dataset_dir holding the images ("" = dataset_dir itself)
    kind: str                   # split_json | fgvc | imagenet | imagenetv2 | folders
    template: str               # CoOp's CUSTOM_TEMPLATES entry
    split_file: str | None = None
    folder_fallback: bool = False   # class-per-folder images: split by listing when the JSON is missing
    ignored: tuple[str, ...] = ()
    class_subset: bool = False      # "folders" kind: only some classes of classnames.txt (ImageNet-A/-R)

    def layout(self) -> str:
        d, im = self.dataset_dir, self.image_dir
        if self.kind == "split_json":
            rows = [f"{d}/", f"  {self.split_file}   {{\"train\"|\"val\"|\"test\": [[<path under {im or d}>, label, classname], ...]}}"]
            rows.append(f"  {im}/..." if im else "  <image folders>/...")
        elif self.kind == "fgvc":
            rows = [f"{d}/", f"  {im}/<image id>.jpg", "  images_variant_{train,val,test}.txt   \"<image id> <variant name>\" per line",
                    "  variants.txt   one variant name per line"]
        elif self.kind == "imagenet":
            rows = [f"{d}/", "  classnames.txt   \"<wnid> <class name>\" per line", f"  {im}/train/<wnid>/*.JPEG",
                    f"  {im}/val/<wnid>/*.JPEG"]
        elif self.kind == "imagenetv2":
            rows = [f"{d}/", "  classnames.txt   (a copy of imagenet/classnames.txt)", f"  {im}/<label 0..999>/*.jpeg"]
        else:
            rows = [f"{d}/", "  classnames.txt   (a copy of imagenet/classnames.txt)", f"  {im}/<wnid>/*"]
        return "<data root>/\n" + "\n".join("  " + r for r in rows)


def _spec(name, dataset_dir, image_dir, template, kind="split_json", split=None, **kw):
    if kind == "split_json" and split is None:
        split = f"split_zhou_{name}.json"
    return DatasetSpec(name, dataset_dir, image_dir, kind, template, split, **kw)


PHOTO = "a photo of a {}."
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    _spec("ImageNet", "imagenet", "images", PHOTO, kind="imagenet"),
    _spec("Caltech101", "caltech-101", "101_ObjectCategories", PHOTO, folder_fallback=True, ignored=CALTECH_IGNORED),
    _spec("OxfordPets", "oxford_pets", "images", "a photo of a {}, a type of pet."),
    _spec("StanfordCars", "stanford_cars", "", PHOTO),
    _spec("OxfordFlowers", "oxford_flowers", "jpg", "a photo of a {}, a type of flower."),
    _spec("Food101", "food-101", "images", "a photo of {}, a type of food.", folder_fallback=True),
    _spec("FGVCAircraft", "fgvc_aircraft", "images", "a photo of a {}, a type of aircraft.", kind="fgvc"),
    _spec("SUN397", "sun397", "SUN397", PHOTO),
    _spec("DescribableTextures", "dtd", "images", "{} texture.", folder_fallback=True),
    _spec("EuroSAT", "eurosat", "2750", "a centered satellite photo of {}.", folder_fallback=True),
    _spec("UCF101", "ucf101", "UCF-101-midframes", "a photo of a person doing {}."),
    _spec("ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", PHOTO, kind="imagenetv2"),
    _spec("ImageNetSketch", "imagenet-sketch", "images", PHOTO, kind="folders"),
    _spec("ImageNetA", "imagenet-adversarial", "imagenet-a", PHOTO, kind="folders", class_subset=True),
    _spec("ImageNetR", "imagenet-rendition", "imagenet-r", PHOTO, kind="folders", class_subset=True),
]}
BASE_TO_NEW = ("ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
               "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101")
VARIANTS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
ALIASES = {"dtd": "DescribableTextures", "flowers102": "OxfordFlowers", "imagenet-a": "ImageNetA",
           "imagenet-r": "ImageNetR", "imagenet-sketch": "ImageNetSketch", "imagenetv2": "ImageNetV2"}


def get_spec(name: str) -> DatasetSpec:
    if name in DATASETS:
        return DATASETS[name]
    low = {k.lower(): k for k in DATASETS}
    key = ALIASES.get(name.lower()) or low.get(name.lower())
    if key is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def clean_classname(name: str) -> str:
    return name.replace("_", " ").strip()


def base_label(label: str) -> str:
    """The dataset name of a row's dataset label (drops FOLDER_SPLIT_NOTE)."""
    return label[:-len(FOLDER_SPLIT_NOTE)] if label.endswith(FOLDER_SPLIT_NOTE) else label


def missing_split_message(spec: DatasetSpec, path: Path) -> str:
    """What to do when a split_zhou JSON is missing (the loader and 00_setup's check say the same)."""
    msg = (f"{spec.name}: the official split file {path} is missing. Download {spec.split_file} as "
           f"{OFFICIAL_SPLITS} says and put it there; the paper's numbers are measured on that split.")
    if spec.folder_fallback:
        msg += (" For your own data only, allow_folder_split=True (prompt job / recipe common) splits the class "
                "folders 50/20/30 instead; its rows are labelled" f" '{spec.name}{FOLDER_SPLIT_NOTE}'.")
    return msg
