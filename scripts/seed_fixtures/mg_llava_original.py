"""Make the MG-LLaVA parity fixture with the ORIGINAL module code (PhoenixZ810/MG-LLaVA @ 3237152d).

MG-LLaVA's whole model needs XTuner's runner, mmengine, DeepSpeed, fairscale, open_clip and torchvision
together, and hard-codes paper widths (a 1536-channel Conv-Gate input, a 2880-channel box projector, a
ConvNeXt-L), so a fixture of the whole model would weigh hundreds of MB. What a checkpoint holds is
smaller: the trainable modules. This script builds exactly those with the original classes, unchanged,
at tiny widths (both take their widths as arguments): ``DualPathFuseModule`` (``fuse_module``) from
``mg_llava/module/fuse_model.py`` and XTuner's ``ProjectorModel`` (``projector``, ``bbox_projector``)
from ``xtuner/model/modules/projector``. It records their weights under MultiFuseObjectLLaVAModel's state
dict names and their outputs on fixed inputs.

Run in the LLaVA seed environment (transformers 4.37.2; see README.md here) with ``--repo`` a work tree of
MG-LLaVA. Stubs: the modules fuse_model.py imports for the rest of the model (mmengine, XTuner's runner
utilities, fairscale, torchvision, its dataset helpers) are inert stand-ins; the package ``__init__`` files
that import them are skipped. DualPathFuseModule and ProjectorModel use none of them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

LOW, HIGH, LLM, BOX_IN = 32, 32, 32, 8 + 16 + 24 + 32  # tiny CLIP width, tiny ConvNeXt stages (8, 16, 24, 32)


def _package(name: str, path: Path) -> None:
    """A package whose ``__init__`` is not run: its submodules import from their files alone."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def _stub(*names: str) -> None:
    class Inert:
        def __getattr__(self, name):
            return Inert()

        def __call__(self, *args, **kwargs):
            return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else Inert()

        def __mro_entries__(self, bases):  # a stand-in used as a base class (BoxLLaVAModel, BaseModel)
            return (object,)

    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Inert()

    for name in names:
        module = Stub(name)
        module.__path__ = []
        sys.modules[name] = module


def import_original(repo: Path):
    _package("xtuner", repo / "xtuner")
    _package("xtuner.model", repo / "xtuner" / "model")
    _package("xtuner.model.modules", repo / "xtuner" / "model" / "modules")
    projector = importlib.import_module("xtuner.model.modules.projector.modeling_projector")
    config = importlib.import_module("xtuner.model.modules.projector.configuration_projector")
    # fuse_model.py's imports for the rest of MultiFuseObjectLLaVAModel (DualPathFuseModule uses none)
    sys.modules["xtuner.model.modules"].ProjectorConfig = config.ProjectorConfig
    sys.modules["xtuner.model.modules"].ProjectorModel = projector.ProjectorModel
    _stub("torchvision", "torchvision.ops", "torchvision.transforms", "torchvision.transforms.functional",
          "mmengine", "mmengine.model", "mmengine.logging", "xtuner.model.utils", "xtuner.dataset",
          "xtuner.dataset.utils", "fairscale", "fairscale.nn", "fairscale.nn.checkpoint", "xtuner.utils",
          "xtuner.tools", "xtuner.tools.utils", "mg_llava.dataset", "mg_llava.dataset.utils", "mg_llava.module.box_model")
    _package("mg_llava", repo / "mg_llava")
    _package("mg_llava.module", repo / "mg_llava" / "module")
    fuse = importlib.import_module("mg_llava.module.fuse_model")
    return fuse.DualPathFuseModule, projector.ProjectorModel, config.ProjectorConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from safetensors.torch import save_file

    fuse_cls, projector_cls, config_cls = import_original(args.repo)
    torch.manual_seed(args.seed)
    fuse = fuse_cls(low_res_dim=LOW, high_res_dim=HIGH)
    projector = projector_cls(config_cls(visual_hidden_size=LOW, llm_hidden_size=LLM, depth=2))
    bbox = projector_cls(config_cls(visual_hidden_size=BOX_IN, llm_hidden_size=LLM, depth=2))
    with torch.no_grad():  # the zero-initialised projections too, so that every tensor shows
        for module in (fuse, projector, bbox):
            for t in module.parameters():
                t.add_(torch.randn_like(t) * 0.1)
    g = torch.Generator().manual_seed(7)
    low = torch.randn(2, 16, LOW, generator=g)  # a 4x4 CLIP grid
    high = torch.randn(2, HIGH, 4, 4, generator=g)  # the ConvNeXt map, on the same grid
    x = torch.randn(2, 5, LOW, generator=g)
    boxes = torch.randn(3, BOX_IN, generator=g)
    with torch.no_grad():
        out = {"fuse_low": low, "fuse_high": high, "fuse_out": fuse(low, high), "projector_in": x,
               "projector_out": projector(x), "bbox_in": boxes, "bbox_out": bbox(boxes)}
    state = {f"fuse_module.{k}": v for k, v in fuse.state_dict().items()}
    state.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
    state.update({f"bbox_projector.{k}": v for k, v in bbox.state_dict().items()})
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in {**state, **{f"ref.{k}": v for k, v in out.items()}}.items()},
              str(args.out / "modules.safetensors"))
    try:
        commit = (args.repo / "COMMIT").read_text().strip()
    except OSError:
        commit = subprocess.run(["git", "-C", str(args.repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    import transformers

    (args.out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/mg_llava_original.py", "original": "PhoenixZ810/MG-LLaVA",
        "commit": commit, "transformers": transformers.__version__, "torch": torch.__version__,
        "modules": {"fuse_module": f"DualPathFuseModule(low_res_dim={LOW}, high_res_dim={HIGH})",
                    "projector": f"ProjectorModel(visual_hidden_size={LOW}, llm_hidden_size={LLM}, depth=2)",
                    "bbox_projector": f"ProjectorModel(visual_hidden_size={BOX_IN}, llm_hidden_size={LLM}, depth=2)"},
        "stubs": ["mmengine, XTuner runner utilities, fairscale, torchvision, mg_llava.dataset and box_model: "
                  "imported by fuse_model.py for the rest of the model, unused by these modules"],
    }, indent=2) + "\n")
    print(f"wrote {args.out}: {len(state)} tensors, fuse out {tuple(out['fuse_out'].shape)}")


if __name__ == "__main__":
    main()
