"""The evaluation catalogue: CAD tasks and their input methods, image types and reconstruction methods."""

from __future__ import annotations

from medlatent.core.errors import ConfigError


def cad_task(config: dict, task_id: str) -> dict:
    """The `cad_tasks` entry of `task_id`; ConfigError lists the configured ids."""
    for entry in config["cad_tasks"]:
        if entry["id"] == task_id:
            return entry
    raise ConfigError(f"unknown CAD task {task_id!r}; configured: {[t['id'] for t in config['cad_tasks']]}")


def medvae_models(models: list[dict]) -> list[dict]:
    """The MedVAE models of `models`: entries that always state their f (an imported family's
    geometry is read from its weights by the jobs; its entry may state f)."""
    return [m for m in models if m["family"] == "medvae"]


def family_models(models: list[dict]) -> list[dict]:
    """The imported models of other families (diffusers, maisi) in `models`."""
    return [m for m in models if m["family"] != "medvae"]


def cad_models(config: dict) -> list[dict]:
    """The models CAD compares, trained (MedVAE) or imported (other families): evaluation.cad.models, or all."""
    selected = config["evaluation"]["cad"]["models"]
    return [m for m in config["models"] if selected is None or m["id"] in selected]


def _autoencoder_methods(config: dict, models: list[dict], dims: int, kinds: list[str]) -> list[dict]:
    """`models` of `dims` (MedVAE and other families), external autoencoders of `dims` and, on 3D,
    the 2D MedVAE models slice-wise at the compression factors of the 3D ones (the same f, Table 1).

    Model methods carry no f: the jobs read each model's geometry from the family protocol.
    """
    methods = [
        {"id": m["id"], "kind": kind, "model": m["id"]}
        for m in models
        if m["dims"] == dims and (kind := "medvae" if m["family"] == "medvae" else "family") in kinds
    ]
    if "slicewise" in kinds and dims == 3:
        factors_3d = {m["f"] for m in medvae_models(models) if m["dims"] == 3}
        methods += [
            {"id": f"{m['id']}_slicewise", "kind": "slicewise", "model": m["id"], "f": m["f"]}
            for m in medvae_models(models)
            if m["dims"] == 2 and m["f"] in factors_3d
        ]
    if "external" in kinds:
        methods += [
            {"id": e["id"], "kind": "external", "f": e["f"], "external": e}
            for e in config["evaluation"]["cad"]["external"]
            if e["dims"] == dims
        ]
    return methods


def isotropic_factor(f: int, dims: int) -> int | None:
    """Size reduction per axis of compression f in `dims` dimensions (f=64: 8 in 2D, 4 in 3D); None
    when f is not the `dims`-th power of an integer (no isotropic downsizing gives it)."""
    factor = round(f ** (1 / dims))
    return factor if factor**dims == f else None


def _interpolation_methods(models: list[dict], dims: int, modes: list[str]) -> list[dict]:
    """Downsizing baselines at the same f as the `models` of `dims` (Table 1): every MedVAE model's,
    and a family model's where its entry states f and f is isotropic (2D: a perfect square, 3D: a
    perfect cube). The DAG needs the method ids at plan time, before any weights are read, so a
    family model that leaves f to its weights adds none."""
    of_dims = [m for m in models if m["dims"] == dims]
    stated = {m["f"] for m in family_models(of_dims) if m.get("f") and isotropic_factor(m["f"], dims)}
    factors = sorted({m["f"] for m in medvae_models(of_dims)} | stated)
    return [{"id": f"{mode}_f{f}", "kind": "interpolation", "mode": mode, "f": f} for f in factors for mode in modes]


def _unique_methods(methods: list[dict], where: str) -> list[dict]:
    ids = [m["id"] for m in methods]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise ConfigError(
            f"{where}: method id(s) {clashes} name two things (a model or external autoencoder id "
            "equals a baseline name such as highres or bicubic_f16); rename the model"
        )
    return methods


def cad_methods(config: dict, task_id: str) -> list[dict]:
    """Every input method a CAD task is trained on (evaluation.cad.methods selects the kinds)."""
    task, cad = cad_task(config, task_id), config["evaluation"]["cad"]
    kinds = cad["methods"]
    methods = [{"id": "highres", "kind": "highres", "f": 1}] if "highres" in kinds else []
    if "interpolation" in kinds:
        methods += _interpolation_methods(cad_models(config), task["dims"], cad["interpolations"])
    methods += _autoencoder_methods(config, cad_models(config), task["dims"], kinds)
    return _unique_methods(methods, f"cad_tasks[{task_id}]")


def cad_method(config: dict, task_id: str, method_id: str) -> dict:
    """One input method of a CAD task by id; ConfigError lists the task's methods."""
    for method in cad_methods(config, task_id):
        if method["id"] == method_id:
            return method
    raise ConfigError(
        f"CAD task {task_id!r} has no method {method_id!r}; "
        f"configured: {[m['id'] for m in cad_methods(config, task_id)]}"
    )


def cad_jobs(config: dict) -> list[tuple[str, str, int]]:
    """(task, method, seed) of every CAD training job."""
    seeds = config["evaluation"]["cad"]["seeds"]
    return [(t["id"], m["id"], s) for t in config["cad_tasks"] for m in cad_methods(config, t["id"]) for s in seeds]


def image_types(config: dict) -> dict[str, list[str]]:
    """Reconstruction groups sources by image type: `<modality>_<anatomy>` (Table 2 rows)."""
    types: dict[str, list[str]] = {}
    for entry in config["sources"]:
        types.setdefault(f"{entry['modality']}_{entry.get('anatomy', 'unspecified')}", []).append(entry["id"])
    return types


def recon_methods(config: dict, dims: int) -> list[dict]:
    """Autoencoders of `dims` (2D models slice-wise on 3D) and interpolation round trips at their f."""
    kinds = config["evaluation"]["recon"]["methods"]
    models = config["models"]
    methods = _autoencoder_methods(config, models, dims, kinds)
    if "interpolation" in kinds:
        methods += _interpolation_methods(models, dims, config["evaluation"]["cad"]["interpolations"])
    return _unique_methods(methods, f"evaluation.recon ({dims}D)")


def segmenter_label(segmenter: dict) -> str:
    """How tables name the SegSim segmenter (never just 'SegSim'); the threshold one as the stand-in it is."""
    if segmenter["kind"] == "monai_bundle":
        return f"MONAI bundle {segmenter['bundle']}"
    return f"threshold segmenter at {segmenter['thresholds']} (stand-in for an anatomical segmenter)"
