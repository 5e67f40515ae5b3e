"""Robust Weight Signatures (Cai, Zhang & Wang, ICML 2023) on CIFAR, with our CIFAR-10-C generator.

    rwsjax run --config=rws:cpu   --workdir=runs/rws_cpu    # this 2-core CPU, < 45 min
    rwsjax run --config=rws:external_cpu --workdir=runs/rws_external_cpu  # θ_pre trained elsewhere, < 45 min
    rwsjax run --config=rws:paper --workdir=runs/rws_paper  # accelerator
    rwsjax run --config=rws:smoke --workdir=/tmp/rws_smoke  # tests
    rwsjax run --config=rws:tinyimagenet_cpu --workdir=runs/rws_tin_cpu  # Tiny-ImageNet subset

Experiment (paper Sec. 3–5):
  * θ_pre: a shared starting point. The paper starts from ImageNet weights; offline we
    pretrain on a source task (CIFAR-100) — or give any checkpoint with ``init_checkpoint``
    (an rwsjax run's variables or a PyTorch state_dict, e.g. torchvision's ImageNet ResNet-50).
  * θ_clean: θ_pre fine-tuned on clean training images; θ_c: θ_pre fine-tuned on training
    images corrupted by c at severity 5, one model per corruption. SGD lr 0.01, momentum
    0.9, wd 5e-4; the best epoch on a held-out split (clean, resp. corrupted).
  * RWS_c = proj⊥(θ_c − θ_pre) w.r.t. (θ_clean − θ_pre), per tensor, on the k shallowest
    conv layers; stored as float32 and quantized to b bits (bit-packed safetensors).
  * Patched model θ_clean + λ·RWS_c; composition Σ_c λ_c·RWS_c (sum or mean); removal.
  * Transfer: RWS extracted on CIFAR-10 applied to θ_pre fine-tuned on CIFAR-100, and to a
    θ_clean that kept training after the signature was taken.
  * Report: per corruption and method, storage (MB on disk), clean test accuracy (TA),
    corrupted test accuracy at severity 5 (RA).
"""

import ml_collections

from rwsjax.configs import add_autoattack

PRESETS = ("paper", "cpu", "external_cpu", "smoke", "tinyimagenet", "tinyimagenet_cpu")


def _finetune(epochs, decay_epochs, lr=0.01):
    f = ml_collections.ConfigDict()
    f.epochs = epochs
    f.batch_size = 128
    f.learning_rate = lr
    f.momentum = 0.9
    f.weight_decay = 5e-4
    f.decay_epochs = decay_epochs
    f.decay_factor = 0.1
    return f


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for rws; valid: {PRESETS} "
                         "(e.g. --config=rws:cpu)")
    c = ml_collections.ConfigDict()
    c.workflow = "rws"
    c.preset = preset
    c.seed = 0
    # rwsjax | official: the value of every field below left at None where rwsjax's protocol and the official
    # code's differ (rwsjax.protocols; docs/protocols.md); a field set explicitly wins either way.
    c.protocol = "rwsjax"

    c.data = ml_collections.ConfigDict()
    c.data.name = "cifar10"          # dataset A: signatures are extracted here
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    # A dataset missing from the data dir is prepared there first: from manual_dir (the downloaded archive,
    # e.g. cifar-10-python.tar.gz) if given, else downloaded (download=False: stop with the URL instead).
    c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.download = True
    c.data.val_size = 1000
    c.data.train_size = ml_collections.FieldReference(None, field_type=int)
    c.data.test_size = ml_collections.FieldReference(None, field_type=int)

    c.model = ml_collections.ConfigDict()
    c.model.name = "vgg16"           # the paper's main architecture; resnet18 / resnet50 work too
    c.model.width_multiplier = 1.0
    c.model.mean = ml_collections.FieldReference(None, field_type=tuple)  # None: each dataset's constants
    c.model.std = ml_collections.FieldReference(None, field_type=tuple)

    # θ_pre given instead of pretrained: a PyTorch state_dict (.pt/.pth/.safetensors, e.g. torchvision's
    # ImageNet ResNet-50 for model.name=resnet50_imagenet, as the paper) or an rwsjax (Orbax) variables dir.
    # Its classifier head may have any number of classes: only the layers that fit are carried over.
    # robustbench:NAME: a RobustBench model of pre.dataset from model_dir (rwsjax.models.robustbench).
    c.init_checkpoint = ""
    c.model_dir = "models"

    # θ_pre: pretraining on the source task (skipped when init_checkpoint is given).
    c.pre = _finetune(epochs=30, decay_epochs=(20, 25), lr=0.05)
    c.pre.dataset = "cifar100"
    c.pre.train_size = ml_collections.FieldReference(None, field_type=int)
    c.pre.val_size = 1000

    c.finetune = _finetune(epochs=10, decay_epochs=(7,))

    c.corruptions = ml_collections.ConfigDict()
    c.corruptions.names = "gaussian_noise,defocus_blur,fog,jpeg_compression"  # noise, blur, weather, digital
    c.corruptions.severity = 5
    c.corruptions.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: WORKDIR/corrupted_tfds

    c.signature = ml_collections.ConfigDict()
    # The signature's layers: the k shallowest conv layers (layers=convs), or, as the official code counts on
    # ResNets, the stem and the first k − 1 residual blocks (layers=blocks). None: protocol's (convs, k=5).
    c.signature.k = ml_collections.FieldReference(None, field_type=int)
    c.signature.layers = ml_collections.FieldReference(None, field_type=str)
    c.signature.bits = 4             # quantized signature; float32 is always stored too
    c.signature.lam = 1.0            # λ of single patches
    # sum | mean for the composed signature (None: protocol's, sum); λ of the composition.
    c.signature.compose = ml_collections.FieldReference(None, field_type=str)
    c.signature.compose_lam = 1.0
    # BN running statistics of a patched model: target (kept: a pure weight patch) | reestimate_clean |
    # reestimate_corrupted (re-estimated on the clean / the signature's corrupted training images). None:
    # protocol's (target); bn_weighting batch | sample (batches weighted equally / by size).
    c.signature.bn = ml_collections.FieldReference(None, field_type=str)
    c.signature.bn_weighting = ml_collections.FieldReference(None, field_type=str)
    # The official code's patch (protocol=official): BN and shortcut tensors = the robust models' mean
    # (transplant), λ applied twice (lambda_twice), re-estimated BN mixed in proportion λ when λ < 1 (bn_blend).
    c.signature.transplant = ml_collections.FieldReference(None, field_type=bool)
    c.signature.lambda_twice = ml_collections.FieldReference(None, field_type=bool)
    c.signature.bn_blend = ml_collections.FieldReference(None, field_type=bool)

    c.sweeps = ml_collections.ConfigDict()
    c.sweeps.lambdas = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    c.sweeps.ks = (1, 2, 3, 5, 8, 13)
    c.sweeps.bits = (1, 2, 4, 8)

    c.transfer = ml_collections.ConfigDict()
    c.transfer.dataset = "cifar100"  # dataset B: a clean model fine-tuned from θ_pre on it gets A's signatures
    c.transfer.train_size = ml_collections.FieldReference(None, field_type=int)
    c.transfer.val_size = 1000
    c.transfer.test_size = ml_collections.FieldReference(None, field_type=int)
    c.transfer.robust_models = True  # also fine-tune B's robust models (observation 3: cross-dataset similarity)
    c.transfer.continued_epochs = 5  # θ_clean keeps training this long after the signature was taken

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 500
    # AutoAttack of θ_clean and θ_clean + composed RWS on the clean test split (ℓ∞ ε = 8/255 as RobustBench):
    # does a corruption signature cost adversarial robustness?  The AA columns of the report; off by default.
    c.eval.eps = 8 / 255
    c.eval.norm = "linf"
    add_autoattack(c.eval)

    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = True         # WORKDIR/tensorboard: losses, accuracies (%), learning rate, the config
    c.log.wandb = False              # also Weights & Biases (pip install wandb)
    c.log.wandb_project = "rwsjax"

    # Stages (pre, one per zoo model, signatures, table, sweeps, transfer, analyses, autoattack, report) are
    # skipped when done in the workdir; --config.redo=signatures recomputes the signatures and every stage after.
    c.redo = ""

    if preset == "cpu":
        # ResNet-18 at width 16: plain VGG-16 (no BN) needs far more epochs than 2 CPU cores allow
        # to leave its initial plateau (measured: loss 4.61 → 4.50 after one CIFAR-100 epoch).
        c.model.name = "resnet18"
        c.model.width_multiplier = 0.25
        c.data.train_size, c.data.val_size, c.data.test_size = 5000, 500, 1000
        c.pre.train_size, c.pre.val_size, c.pre.epochs, c.pre.decay_epochs = 15000, 500, 10, (8,)
        c.finetune.epochs, c.finetune.decay_epochs = 6, (4,)
        c.transfer.train_size, c.transfer.val_size, c.transfer.test_size = 5000, 500, 1000
        c.transfer.continued_epochs = 2
    elif preset == "external_cpu":
        # θ_pre from outside the project: the official AutoAttack package's CIFAR-10 ResNet-18 (pip install
        # --no-deps pyautoattack; full width, inputs in [0, 1] without normalization, ~93% clean accuracy),
        # its CIFAR-10 head included (pre.dataset). θ_clean and each θ_c are fine-tuned from it for 2 epochs
        # on 2,000 training images; short sweeps (a full-width evaluation costs ~15 s per 1,000 images here).
        c.init_checkpoint = "pyautoattack:model_test.pt"
        c.pre.dataset = "cifar10"
        c.model.name, c.model.width_multiplier = "resnet18", 1.0
        c.model.mean, c.model.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        c.data.train_size, c.data.val_size, c.data.test_size = 2000, 500, 1000
        c.finetune.epochs, c.finetune.decay_epochs = 2, (1,)
        c.transfer.train_size, c.transfer.val_size, c.transfer.test_size = 1000, 200, 500
        c.transfer.robust_models = False
        c.transfer.continued_epochs = 1
        c.sweeps.lambdas = (0.5, 1.5)
        c.sweeps.ks = (1, 9)
        c.sweeps.bits = (2,)
        c.eval.batch_size = 250
    elif preset in ("tinyimagenet", "tinyimagenet_cpu"):
        # Tiny-ImageNet as dataset A (64×64, 200 classes; test = the official validation split), the paper's
        # ResNet-50 layout (torchvision's); signatures transferred to CIFAR-100 (B).
        c.data.name = "tiny_imagenet"
        c.data.val_size = 2000
        c.model.name = "resnet50_imagenet"
        if preset == "tinyimagenet_cpu":
            # The real subset in ../shared: ResNet-18 (CIFAR layout) at width 16, 3,000 training images, two
            # corruptions; θ_pre from 4 epochs on 10,000 CIFAR-100 images. A pipeline check (~30 min here).
            c.model.name = "resnet18"
            c.model.width_multiplier = 0.25
            c.data.train_size, c.data.val_size, c.data.test_size = 3000, 400, 1000
            c.pre.train_size, c.pre.val_size, c.pre.epochs, c.pre.decay_epochs = 10000, 500, 4, (3,)
            c.finetune.epochs, c.finetune.decay_epochs = 3, (2,)
            c.corruptions.names = "gaussian_noise,fog"
            c.transfer.train_size, c.transfer.val_size, c.transfer.test_size = 3000, 500, 1000
            c.transfer.robust_models = False
            c.transfer.continued_epochs = 1
            c.sweeps.ks = (1, 3, 5, 13)
            c.sweeps.lambdas = (0.0, 0.5, 1.0, 1.5)
    elif preset == "smoke":
        c.model.name, c.model.width_multiplier = "resnet18", 0.0625  # the cpu preset's architecture
        c.data.train_size, c.data.val_size, c.data.test_size = 256, 100, 100
        c.pre.train_size, c.pre.val_size, c.pre.epochs, c.pre.decay_epochs = 500, 100, 1, ()
        c.finetune.epochs, c.finetune.decay_epochs, c.finetune.batch_size = 1, (), 64
        c.pre.batch_size = 64
        c.corruptions.names = "gaussian_noise,fog"
        c.transfer.train_size, c.transfer.val_size, c.transfer.test_size = 500, 100, 100
        c.transfer.continued_epochs = 1
        c.sweeps.lambdas = (0.0, 1.0)
        c.sweeps.ks = (1, 2)
        c.sweeps.bits = (2, 8)
        c.signature.k = 2
        c.eval.batch_size = 100
    return c
