"""Pack the bundle into a self-contained MONAI model-zoo zip.

    python scripts/pack_bundle.py --checkpoint bundle/runs/demo/model.pt \
        --overlays "['bundle/configs/demo.json']" --output dist/autolr_dualpath_ct.zip

The zip holds one folder ``<name>/`` in the zoo layout: ``configs/`` (all of the bundle's configs), ``docs/``,
``LICENSE``, ``models/model.pt`` (the checkpoint's weights, checked against the network, on the CPU) and
``models/model.ts`` (their TorchScript export by MONAI's ``ckpt_export``), ``large_files.yml`` (the weights' MD5
and ``--weights_url``, for MONAI's ``download_large_files`` once the weights are hosted) and ``scripts/`` (the bundle's ``scripts/__init__.py``
plus a copy of the ``autolr_monai`` package): unzipped where ``autolr_monai`` is not installed,
``python -m monai.bundle run inference --config_file <name>/configs/inference.json --input <scan>`` still runs.

``overlays`` are the config overlays the checkpoint was trained with (``demo.json`` for the demo): their settings
that ``inference.json`` also has (``network_def``, ``spacing``, ``inference_tile`` ...) are written into the packed
``inference.json``, so that the packed bundle segments with the network it carries.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import fire
import torch
from monai.bundle import ConfigParser, ckpt_export

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
PACKAGE = REPO / "autolr_monai"


def _merge_into_inference(configs: Path, overlays: list[str]) -> list[str]:
    """Apply the overlays' settings that ``inference.json`` has; returns the ids applied."""
    path = configs / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(path))
    applied = []
    for overlay in overlays:
        for key, value in ConfigParser.load_config_file(overlay).items():
            if key.replace("::", "#").split("#")[0] in parser.config:
                parser[key] = value
                applied.append(key)
    content = {k: v for k, v in parser.get().items() if k != ConfigParser.meta_key}
    path.write_text(json.dumps(content, indent=4) + "\n")
    return applied


def _write_weights(configs: Path, checkpoint: Path, target: Path) -> None:
    """The checkpoint's weights as a bare CPU ``state_dict`` at ``target``, after checking that they fit the packed
    network (``load_model`` names a mismatch): a GPU checkpoint or a single run's full checkpoint becomes what
    ``ckpt_export`` and the zoo expect."""
    from autolr_monai.inference import load_model

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.read_meta(str(configs / "metadata.json"))
    torch.save(load_model(parser.get_parsed_content("network_def"), str(checkpoint)).state_dict(), target)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _large_files(models: Path, weights_url: str) -> str:
    lines = ["# Weights kept out of git; `python -m monai.bundle download_large_files --bundle_path <bundle>` fetches",
             "# them once they are hosted at the url (written by scripts/pack_bundle.py --weights_url).",
             "large_files:"]  # fmt: skip
    for weights in sorted(models.iterdir()):
        url = f"{weights_url.rstrip('/')}/{weights.name}" if weights_url else ""
        lines += [f'  - path: "models/{weights.name}"', f'    url: "{url}"', f'    hash_val: "{_md5(weights)}"',
                  '    hash_type: "md5"']  # fmt: skip
    return "\n".join(lines) + "\n"


def pack(
    output: str = "dist/autolr_dualpath_ct.zip",
    checkpoint: str | None = None,
    overlays: list[str] | tuple[str, ...] = (),
    name: str = "autolr_dualpath_ct",
    torchscript: bool = True,
    weights_url: str = "",
) -> str:
    """Write the bundle zip to ``output``; returns its path. Without ``checkpoint`` the zip carries no weights
    (``models/`` is empty and inference needs ``--checkpoint``)."""
    overlays = [overlays] if isinstance(overlays, str) else list(overlays)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(BUNDLE / "configs", root / "configs", ignore=ignore)
        shutil.copytree(BUNDLE / "docs", root / "docs", ignore=ignore)
        shutil.copytree(BUNDLE / "scripts", root / "scripts", ignore=ignore)
        shutil.copytree(PACKAGE, root / "scripts" / "autolr_monai", ignore=ignore)
        shutil.copy2(BUNDLE / "LICENSE", root / "LICENSE")
        applied = _merge_into_inference(root / "configs", overlays)
        models = root / "models"
        models.mkdir()
        if checkpoint:
            _write_weights(root / "configs", Path(checkpoint), models / "model.pt")
            if torchscript:
                ckpt_export(net_id="network_def", filepath=str(models / "model.ts"), ckpt_file=str(models / "model.pt"),
                            meta_file=str(root / "configs" / "metadata.json"),
                            config_file=str(root / "configs" / "inference.json"))  # fmt: skip
        (root / "large_files.yml").write_text(_large_files(models, weights_url))
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                archive.write(path, path.relative_to(root.parent))
    print(f"packed {out} ({out.stat().st_size / 2**20:.1f} MiB); inference.json takes {applied or 'no overlay'} "
          f"from {overlays or 'no overlay'}; weights: {checkpoint or 'none'}")  # fmt: skip
    return str(out)


if __name__ == "__main__":
    fire.Fire(pack)
