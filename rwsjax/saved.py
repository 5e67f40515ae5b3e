"""Load a saved model as ``(model, variables)``: ``rwsjax.load(path)``.

    import rwsjax
    model, variables = rwsjax.load("runs/rift_cpu/at/final")        # what the directory records
    logits = model.apply(variables, images, train=False)            # images: float32 [B, 32, 32, 3] in [0, 1]
    model, variables = rwsjax.load("model.pt", architecture="resnet18", num_classes=10, width_multiplier=0.25)
    model, variables = rwsjax.load("robustbench:Carmon2019Unlabeled", model_dir="models")  # RobustBench's file

Every variables directory rwsjax writes (``at/final``, ``ft/final``, ``zoo/<name>/final``, ``model``)
records what it holds (:func:`rwsjax.workflows.common.describe`).  A directory written without that
record, and a PyTorch ``state_dict`` file, need the architecture given as keyword arguments.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp


def load(path: str, *, architecture: str | None = None, num_classes: int | None = None,
         width_multiplier: float | None = None, mean=None, std=None, dataset: str | None = None,
         model_dir: str | None = None):
    """``(model, variables)`` of the model saved at ``path``.

    Args:
      path: an rwsjax variables directory, a PyTorch ``state_dict`` file (``.pt``/``.pth``/
        ``.safetensors``, :mod:`rwsjax.models.pytorch_io`), or ``robustbench:[THREAT/]NAME``: RobustBench's
        file ``model_dir/<dataset>/<threat>/NAME.pt`` with the architecture and normalization of its name
        (:mod:`rwsjax.models.robustbench`; ``dataset`` default ``cifar10``, ``model_dir`` default ``models``).
      architecture, num_classes, width_multiplier, mean, std: the model (a name of
        :data:`rwsjax.models.registry.MODELS`; normalization per channel on the [0, 1] pixel scale).  Needed for
        a PyTorch file or a directory without a record; given for a directory with one, they must agree with it.
      dataset: a :data:`rwsjax.data.sources.DATASETS` name to take ``num_classes``, ``mean``, ``std`` and the
        image size from (default: the record's; else 32×32).

    Returns:
      ``(model, variables)``: an unbound Flax module taking float32 ``[B, H, W, 3]`` images in [0, 1], and host
      variables ``{"params", "batch_stats"}``.

    Raises:
      ValueError: no such path; the architecture missing where the file does not record it; a given field that
        contradicts the record (named with both values); names or shapes that do not fit (see
        :func:`rwsjax.workflows.common.load_model`).
    """
    from rwsjax.data.sources import DATASETS
    from rwsjax.models.registry import create_model
    from rwsjax.train import checkpoint
    from rwsjax.workflows.common import init_variables, load_model

    from rwsjax.models import robustbench
    if robustbench.is_spec(path):
        dataset = dataset or "cifar10"
        arch, rb_mean, rb_std = robustbench.entry(path, dataset)
        path = robustbench.checkpoint_file(path, dataset, model_dir)
        architecture, mean, std = architecture or arch, mean or rb_mean, std or rb_std
    if not os.path.exists(path):
        raise ValueError(f"{path!r} does not exist: give an rwsjax variables directory (e.g. runs/rift_cpu/at/final) "
                         "or a PyTorch state_dict file")
    given = {"architecture": architecture, "num_classes": num_classes, "width_multiplier": width_multiplier,
             "mean": None if mean is None else list(mean), "std": None if std is None else list(std)}
    if dataset is not None:
        info = DATASETS[dataset]
        given["num_classes"] = given["num_classes"] or info.num_classes
        given["mean"] = given["mean"] or list(info.mean)
        given["std"] = given["std"] or list(info.std)
    record = checkpoint.read_info(path) if os.path.isdir(path) else None
    if record is not None:
        clash = [f"{k}={v!r} (the file records {record[k]!r})" for k, v in given.items()
                 if v is not None and record.get(k) is not None and v != record[k]]
        if clash:
            raise ValueError(f"{path} holds another model than asked for: {'; '.join(clash)}")
        given = {k: record.get(k) if given[k] is None else given[k] for k in given}
    if given["architecture"] is None or given["num_classes"] is None:
        raise ValueError(f"{path} does not record its model: pass architecture= and num_classes= (or dataset=), "
                         "e.g. rwsjax.load(path, architecture='resnet18', dataset='cifar10', width_multiplier=0.25)")
    model = create_model(given["architecture"], num_classes=given["num_classes"],
                         width_multiplier=1.0 if given["width_multiplier"] is None else given["width_multiplier"],
                         mean=tuple(given["mean"] or (0.0, 0.0, 0.0)), std=tuple(given["std"] or (1.0, 1.0, 1.0)))
    source = dataset or (record or {}).get("dataset")
    size = DATASETS[source].image_shape[0] if source in DATASETS else 32  # VGG-16's head depends on it
    like = init_variables(model, jnp.zeros((1, size, size, 3), jnp.float32), 0)
    return model, jax.device_get(load_model(path, like, model))
