"""The calibration set: shipped prompts and questions, and real photographs.

Representative activations come from running our own pipeline on what users send: text-to-image prompts
(short and long, objects, scenes, styles) and questions about photographs. The photographs are the real
ones scikit-image ships inside its wheel (`pip install jflow[calib]`), read as plain image files, or any
folder of images the user passes with --calib. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from jflow.errors import InputError

# Held out: the artifact's own end-to-end cases ("a red cube on a wooden table", "a cat", "What is in this
# picture?") are not among these, so verify and the accuracy report judge inputs calibration never saw.
PROMPTS = (
    "a wooden table with a red teapot and two cups",
    "a cat sleeping on a sofa in the afternoon sun",
    "a watercolor painting of a lighthouse on a cliff at sunset",
    "a robot arm picking up a blue ball in a factory",
    "a bowl of ramen with an egg and green onions, top view",
    "an astronaut riding a horse on the moon, digital art",
    "a snowy mountain village at night with warm lights in the windows",
    "a close-up photo of a hummingbird drinking from a red flower",
    "a vintage car parked in front of a diner, 1950s style",
    "a minimalist logo of a fox made of geometric shapes",
    "a crowded market street in the rain, reflections on the ground",
    "a cup of coffee with latte art on a marble counter",
    "an oil painting of a stormy sea with a small sailing boat",
    "a futuristic city skyline with flying cars at dawn",
    "a golden retriever puppy playing in autumn leaves",
    "a pencil sketch of an old oak tree",
    "a bookshelf full of colorful books in a cozy library",
    "a plate of fresh fruit: apples, oranges, grapes and a banana",
    "a portrait of an elderly fisherman with a grey beard, dramatic lighting",
    "a drone photo of a winding river through a green forest",
    "a pixel art castle on a hill with a dragon flying above",
    "a glass of orange juice next to a stack of pancakes",
    "a desert with sand dunes and a single cactus under a starry sky",
    "an isometric illustration of a small cozy bedroom",
    "a macro photo of a drop of water on a leaf",
    "a red double-decker bus on a bridge in London",
    "a child flying a kite on a windy beach",
    "a steaming cup of tea on a windowsill, rain outside",
    "a medieval knight in shining armor, studio photo",
    "a field of sunflowers under a clear blue sky",
    "a neon sign that says open in a dark alley",
    "a ceramic vase with white tulips on a wooden shelf",
)

QUESTIONS = (
    "What do you see in this photograph?",
    "Describe the image in detail.",
    "How many objects can you see?",
    "What colors dominate this image?",
    "Is this photo taken indoors or outdoors?",
    "What is the main subject doing?",
    "Describe the background of the image.",
    "What time of day does it look like?",
    "Is there any text in the image? What does it say?",
    "What material is the main object made of?",
    "What would you title this photograph?",
    "Is there a person in the picture? Describe them.",
    "What is unusual about this image?",
    "Where could this photo have been taken?",
    "Write one sentence that describes this image.",
    "What shapes can you see?",
    "Is the image blurry or sharp?",
    "What is on the left side of the image?",
    "What emotions does this picture convey?",
    "List three things you notice in this image.",
    "Could this be a scientific image? Why?",
    "What is the lighting like?",
    "Describe the texture of the surface.",
    "What animal, if any, is in the picture?",
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# scikit-image's bundled photographs (synthetic test patterns and tiny masks left out).
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "camera.png", "coins.png", "moon.png",
                  "page.png", "text.png", "brick.png", "grass.png", "gravel.png", "ihc.png", "retina.jpg",
                  "clock_motion.png")


@dataclass(frozen=True)
class CalibrationSet:
    prompts: tuple[str, ...]
    questions: tuple[str, ...]
    photos: tuple[Path, ...]
    source: str

    @property
    def digest(self) -> str:
        h = hashlib.sha256("\n".join(self.prompts + self.questions).encode())
        for photo in self.photos:
            h.update(photo.name.encode())
            h.update(photo.read_bytes())
        return h.hexdigest()

    def to_manifest(self) -> dict:
        return {"source": self.source, "prompts": len(self.prompts), "questions": len(self.questions),
                "photos": [p.name for p in self.photos], "digest": self.digest}


def skimage_photos() -> list[Path]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the default calibration photographs come from scikit-image's wheel, which is not "
                         "installed: pip install 'jflow[calib]', or pass --calib FOLDER with your own photos")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    found = [folder / name for name in SKIMAGE_PHOTOS if (folder / name).is_file()]
    if not found:
        raise InputError(f"scikit-image is installed but its photographs are not in {folder}; pass --calib FOLDER")
    return found


def calibration_set(samples: int, calib: str | Path | None = None) -> CalibrationSet:
    """`samples` prompts and `samples` questions (each question paired with a photograph, in turn), from
    the shipped lists and scikit-image's photos, or the photos of the folder `calib`."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise InputError(f"--samples must be a whole number >= 1, got {samples!r}")
    if calib is None:
        photos, source = skimage_photos(), "jflow prompts/questions + scikit-image photographs"
    else:
        folder = Path(calib)
        if not folder.is_dir():
            raise InputError(f"--calib {folder}: not a folder of images")
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not photos:
            raise InputError(f"--calib {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some photographs")
        source = f"jflow prompts/questions + photographs from {folder}"
    pick = lambda items: tuple(items[i % len(items)] for i in range(samples))  # noqa: E731
    return CalibrationSet(pick(PROMPTS), pick(QUESTIONS), pick(photos), source)
