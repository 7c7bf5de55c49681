"""A generated Market-1501-style dataset of procedurally drawn people.

Each identity has a body build, skin and hair, clothes colours, a shirt pattern and perhaps a
bag; each image adds pose, scale and position jitter, and each camera its own background, colour
cast, blur and noise; some images are partly occluded. Colours come from small palettes, so
identities share clothes and cameras shift colours: re-identification is learnable, not trivial.
The output is real JPEG files with Market-style names in `bounding_box_train/`, `query/` and
`bounding_box_test/` (with junk `-1_` and distractor `0000_` images), deterministic per seed.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reidcli.errors import OutputError, UsageError
from reidcli.recipe.base import MAX_SEED
from reidcli.recipe.options import SyntheticOptions

SHIRTS = [(200, 30, 30), (30, 60, 170), (240, 240, 235), (25, 25, 25), (40, 140, 60),
          (240, 200, 40), (130, 40, 150), (250, 130, 30), (120, 120, 125), (90, 170, 220),
          (230, 120, 170), (110, 70, 40)]  # fmt: skip
TROUSERS = [(30, 40, 80), (20, 20, 22), (110, 110, 115), (200, 185, 150), (95, 65, 40),
            (230, 230, 225), (60, 90, 140), (70, 80, 50)]  # fmt: skip
SKINS = [(245, 210, 180), (225, 180, 140), (190, 140, 100), (140, 95, 60), (95, 65, 45)]
HAIRS = [(20, 15, 10), (70, 45, 25), (150, 110, 60), (210, 180, 120), (130, 130, 130)]
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo")
JPEG_BYTES_PER_PIXEL = 0.6  # quality-90 JPEG of these drawings, generously (about 0.25 measured)


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate.

    Attributes:
        ids: identities (split between train and test by `test_share`).
        cams: cameras (2 to 99).
        images_per_id: images per identity (at least 4, spread over 2+ cameras, 2+ each).
        height, width: image size in pixels.
        seed: random seed; the same seed gives the same files.
        test_share: share of identities in the test split (query + gallery).
        junk_share, distractor_share: junk (`-1`) and distractor (`0000`) images added to the
            gallery, as a share of its person images (Market-1501 has about 0.29 and 0.21).
    """

    ids: int = 100
    cams: int = 6
    images_per_id: int = 8
    height: int = 128
    width: int = 64
    seed: int = 0
    test_share: float = 0.5
    junk_share: float = 0.15
    distractor_share: float = 0.1

    @classmethod
    def from_options(cls, options: SyntheticOptions, seed: int) -> "SyntheticSpec":
        """The spec of `reid prepare synthetic`'s options."""
        height, width = options.size
        return cls(options.ids, options.cams, options.images_per_id, height, width, seed)

    def check(self, folder: Path | None = None) -> None:
        """Raise a usage error when the numbers cannot make a usable dataset (the bounds of
        `SyntheticOptions`), or when its images would not fit, estimated, on the disk holding
        `folder`."""
        SyntheticOptions.build(
            ids=self.ids, cams=self.cams, images_per_id=self.images_per_id,
            size=(self.height, self.width),
        )  # fmt: skip
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if folder is not None:
            self._check_disk(folder)

    def _check_disk(self, folder: Path) -> None:
        images = self.ids * self.images_per_id * (1 + self.junk_share + self.distractor_share)
        need = int(images * (JPEG_BYTES_PER_PIXEL * self.height * self.width + 1024))
        existing = next((p for p in (folder, *folder.parents) if p.is_dir()), None)
        free = shutil.disk_usage(existing).free if existing is not None else need
        if need > free:
            raise UsageError(
                f"about {images:,.0f} images of {self.height}x{self.width} need about "
                f"{need / 2**30:.2f} GiB, but {existing} has {free / 2**30:.2f} GiB free"
            )


def _jitter(rng: np.random.Generator, colour: tuple, amount: int = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def draw_identity(rng: np.random.Generator) -> dict:
    """The appearance of one person: build, colours, pattern, bag."""
    shirt = int(rng.integers(len(SHIRTS)))
    return {
        "build": float(rng.uniform(0.8, 1.15)),
        "tall": float(rng.uniform(0.9, 1.04)),
        "skin": _jitter(rng, SKINS[rng.integers(len(SKINS))], 10),
        "hair": _jitter(rng, HAIRS[rng.integers(len(HAIRS))], 10),
        "long_hair": bool(rng.random() < 0.3),
        "shirt": _jitter(rng, SHIRTS[shirt]),
        "accent": _jitter(rng, SHIRTS[(shirt + rng.integers(1, len(SHIRTS))) % len(SHIRTS)]),
        "pattern": PATTERNS[rng.integers(len(PATTERNS))],
        "short_sleeves": bool(rng.random() < 0.4),
        "trousers": _jitter(rng, TROUSERS[rng.integers(len(TROUSERS))]),
        "shorts": bool(rng.random() < 0.25),
        "shoes": _jitter(rng, TROUSERS[rng.integers(len(TROUSERS))], 10),
        "bag": ("none", "backpack", "shoulder")[rng.choice(3, p=(0.5, 0.3, 0.2))],
        "bag_colour": _jitter(rng, TROUSERS[rng.integers(len(TROUSERS))], 25),
    }


def draw_camera(rng: np.random.Generator, height: int, width: int) -> dict:
    """A camera's look: background gradient, colour cast, blur and noise levels."""
    wall = rng.uniform(60, 200, 3)
    floor = rng.uniform(50, 170, 3)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    background = (wall * (1 - t) + floor * t) * np.ones((1, width, 1))
    return {
        "background": background.astype(np.float32),  # (H, W, 3)
        "gain": rng.uniform(0.75, 1.25, 3).astype(np.float32),
        "offset": rng.uniform(-20, 20, 3).astype(np.float32),
        "blur": float(rng.uniform(0.0, 0.9)),
        "noise": float(rng.uniform(2.0, 7.0)),
    }


def _box(draw: ImageDraw.ImageDraw, x0, y0, x1, y1, fill) -> None:
    """A rectangle from any two opposite corners (PIL wants them ordered)."""
    draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=fill)


def _draw_shirt(draw: ImageDraw.ImageDraw, box: tuple, person: dict, step: int) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=person["shirt"])
    accent, pattern = person["accent"], person["pattern"]
    if pattern in ("hstripes", "checks"):
        for y in range(int(y0) + step // 2, int(y1), step):
            draw.rectangle((x0, y, x1, y + step // 3), fill=accent)
    if pattern in ("vstripes", "checks"):
        for x in range(int(x0) + step // 2, int(x1), step):
            draw.rectangle((x, y0, x + step // 3, y1), fill=accent)
    if pattern == "logo":
        cx, cy, r = (x0 + x1) / 2, y0 + (y1 - y0) * 0.4, (x1 - x0) * 0.2
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=accent)


def render_person(draw: ImageDraw.ImageDraw, person: dict, size: tuple, rng) -> None:
    """Draw one person with pose and scale jitter onto `draw` (size = (H, W))."""
    height, width = size
    ph = height * rng.uniform(0.78, 0.95) * person["tall"]
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    top = (height - ph) / 2 + rng.uniform(-0.04, 0.04) * height
    half = min(0.19 * ph * person["build"], 0.45 * width)
    stride = rng.uniform(-0.09, 0.09) * ph  # leg spread: walking phase
    side = 1 if rng.random() < 0.5 else -1  # facing: which side the bag shows on
    head_r, neck = 0.065 * ph, top + 0.14 * ph
    waist, feet = top + 0.52 * ph, top + 0.97 * ph
    if person["bag"] == "backpack":
        _box(draw, cx - side * half * 1.25, neck + 4, cx, waist - 2, person["bag_colour"])
    leg_w = half * 0.45
    for sign in (-1, 1):
        hip = cx + sign * half * 0.45
        foot = hip + sign * stride
        knee_y = waist + (feet - waist) * (0.45 if person["shorts"] else 1.0)
        leg = [
            (hip - leg_w, waist),
            (hip + leg_w, waist),
            (foot + leg_w, feet),
            (foot - leg_w, feet),
        ]
        draw.polygon(leg, fill=person["skin"] if person["shorts"] else person["trousers"])
        if person["shorts"]:
            knee_x = hip + sign * stride * 0.45
            top_leg = [(hip - leg_w, waist), (hip + leg_w, waist), (knee_x + leg_w, knee_y)]
            draw.polygon([*top_leg, (knee_x - leg_w, knee_y)], fill=person["trousers"])
        shoe = (foot - leg_w * 1.3, feet - 3, foot + leg_w * 1.5, feet + 2)
        draw.ellipse(shoe, fill=person["shoes"])
    arm = person["skin"] if person["short_sleeves"] else person["shirt"]
    swing = rng.uniform(-0.05, 0.05) * ph
    for sign in (-1, 1):
        x = cx + sign * half
        hand_y = waist + 0.06 * ph
        shoulder = [(x, neck + 2), (x + sign * half * 0.35, neck + 2)]
        hand = [(x + sign * (half * 0.3 + swing), hand_y), (x + sign * swing, hand_y)]
        draw.polygon(shoulder + hand, fill=arm)
    _draw_shirt(draw, (cx - half, neck, cx + half, waist), person, max(3, int(ph * 0.05)))
    if person["bag"] == "shoulder":
        bx = cx + side * half
        draw.line((cx - side * half * 0.6, neck, bx, waist - 4), fill=person["bag_colour"], width=2)
        bag_bottom = waist + 0.08 * ph
        _box(draw, bx - 0.2 * half, waist - 8, bx + 0.45 * half, bag_bottom, person["bag_colour"])
    hy = neck - head_r
    draw.ellipse((cx - head_r, hy - head_r, cx + head_r, hy + head_r), fill=person["skin"])
    hair_bottom = hy + (head_r * 1.6 if person["long_hair"] else -head_r * 0.1)
    draw.chord((cx - head_r * 1.05, hy - head_r * 1.1, cx + head_r * 1.05, hair_bottom), 180, 360,
               fill=person["hair"])  # fmt: skip
    if person["long_hair"]:
        for x0, x1 in ((-1.05, -0.7), (0.7, 1.05)):  # hair falling beside the face
            _box(draw, cx + head_r * x0, hy, cx + head_r * x1, hair_bottom, person["hair"])


def render_image(person: dict | None, camera: dict, size: tuple, rng) -> Image.Image:
    """One camera image: background clutter, the person (None: background only), occlusion."""
    height, width = size
    image = Image.fromarray(camera["background"].astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.05, 0.3) * height
        draw.rectangle((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.uniform(40, 200, 3)))
    if person is not None:
        render_person(draw, person, size, rng)
    if rng.random() < 0.25:  # an occluder from one side or from below
        colour = tuple(int(v) for v in rng.uniform(20, 230, 3))
        if rng.random() < 0.5:
            w = rng.uniform(0.2, 0.45) * width
            x0 = 0 if rng.random() < 0.5 else width - w
            draw.rectangle((x0, rng.uniform(0.2, 0.6) * height, x0 + w, height), fill=colour)
        else:
            draw.rectangle((0, height * rng.uniform(0.7, 0.82), width, height), fill=colour)
    radius = camera["blur"] + rng.uniform(0.0, 0.6)
    if radius > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(image, dtype=np.float32) * camera["gain"] * rng.uniform(0.85, 1.15)
    pixels += camera["offset"] + rng.normal(0.0, camera["noise"], pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _camera_plan(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Cameras of one identity's images: 2+ cameras, 2+ images each (for cross-camera matches)."""
    most = max(2, min(spec.cams, 4, spec.images_per_id // 2))
    chosen = rng.choice(spec.cams, size=int(rng.integers(2, most + 1)), replace=False) + 1
    return np.sort(np.resize(chosen, spec.images_per_id))


def plan_images(spec: SyntheticSpec) -> list[tuple[str, int, int, int]]:
    """What to draw: (folder, pid, camera, appearance index) per image, in file order.

    Appearance index i >= 0 is identity i; -1 draws background only (junk), -2 a random
    passer-by (distractor).
    """
    rng = np.random.default_rng([spec.seed, 1])
    pids = np.sort(rng.choice(np.arange(1, max(1501, 2 * spec.ids)), size=spec.ids, replace=False))
    n_test = min(spec.ids - 1, max(1, round(spec.ids * spec.test_share)))
    test = set(rng.choice(spec.ids, size=n_test, replace=False).tolist())
    plan, gallery = [], 0
    for index, pid in enumerate(pids.tolist()):
        cams = _camera_plan(rng, spec)
        if index not in test:
            plan += [("bounding_box_train", pid, int(c), index) for c in cams]
            continue
        first = np.r_[True, cams[1:] != cams[:-1]]  # one query per camera, as Market-1501
        plan += [
            ("query" if f else "bounding_box_test", pid, int(c), index)
            for c, f in zip(cams, first, strict=True)
        ]
        gallery += int((~first).sum())
    for pid, share in ((-1, spec.junk_share), (0, spec.distractor_share)):
        for cam in rng.integers(1, spec.cams + 1, size=round(gallery * share)).tolist():
            plan.append(("bounding_box_test", pid, cam, -1 if pid == -1 else -2))
    return plan


def write_synthetic(folder: Path, spec: SyntheticSpec) -> Path:
    """Write the dataset's JPEG files into the new folder `folder` (removed first if a killed
    run left it) and return it."""
    spec.check()
    size = (spec.height, spec.width)
    people = [draw_identity(np.random.default_rng([spec.seed, 2, i])) for i in range(spec.ids)]
    cameras = [
        draw_camera(np.random.default_rng([spec.seed, 3, c]), *size) for c in range(spec.cams)
    ]
    shutil.rmtree(folder, ignore_errors=True)
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (folder / split).mkdir(parents=True)
    frames = np.zeros(spec.cams + 1, dtype=np.int64)
    for n, (split, pid, cam, who) in enumerate(plan_images(spec)):
        rng = np.random.default_rng([spec.seed, 4, n])
        person = people[who] if who >= 0 else (draw_identity(rng) if who == -2 else None)
        image = render_image(person, cameras[cam - 1], size, rng)
        frames[cam] += int(rng.integers(1, 50))  # Market names carry the video frame number
        name = f"{pid:04d}_c{cam}s1_{frames[cam]:06d}_00.jpg" if pid >= 0 else None
        name = name or f"-1_c{cam}s1_{frames[cam]:06d}_00.jpg"
        image.save(folder / split / name, quality=90)
    return folder


def generate_synthetic(out: Path, spec: SyntheticSpec) -> Path:
    """Write the dataset's JPEG files into `out`, a new or empty folder, and return `out`.

    The files are written to a sibling temporary folder first, so an interrupted run leaves no
    half-generated dataset behind.

    Raises:
        OutputError: `out` exists and is not an empty folder (nothing there is replaced).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out}: exists and is not an empty folder; choose a new folder")
    tmp = write_synthetic(out.with_name(f".{out.name}.partial"), spec)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
