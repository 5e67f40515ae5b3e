"""RiFT: Robust Critical Fine-Tuning (Zhu et al., ICCV 2023) on CIFAR.

    rwsjax run --config=rift:paper --workdir=runs/rift   # accelerator
    rwsjax run --config=rift:cpu   --workdir=runs/cpu    # this 2-core CPU, < 45 min
    rwsjax run --config=rift:cpu_pgd10 --workdir=runs/cpu_pgd10  # PGD-10 AT, 6 epochs on 8,000 images, ~30 min
    rwsjax run --config=rift:smoke --workdir=/tmp/smoke  # seconds (tests)
    rwsjax run --config=rift:tinyimagenet --workdir=runs/rift_tin       # Tiny-ImageNet
    rwsjax run --config=rift:tinyimagenet_cpu --workdir=runs/rift_tin_cpu  # its subset

Any field can be overridden: ``--config.model.name=resnet34 --config.at.epochs=5``.

Experiment (paper Sec. 4.1 and Bag of Tricks, Pang et al. 2021):
  * θ_AT: PGD-AT (Madry et al.), ε = 8/255, step 2/255, 10 steps, random start;
    SGD momentum 0.9, weight decay 5e-4, batch 128, lr 0.1 decayed ×0.1 at
    epochs 100 and 105 of 110; the best epoch by validation PGD-10 accuracy.
  * MRC (Algorithm 1): every conv/dense kernel, ε = 0.1 relative Frobenius
    radius, 10 ascent epochs of SGD lr 1 on PGD-10 examples fixed from θ_AT.
  * Fine-tuning: the least critical module, clean data, SGD lr 1e-3, momentum
    0.9, wd 5e-4, 10 epochs, lr ×0.1 after epoch 5; best epoch by validation
    clean accuracy.
  * Interpolation: α ∈ {0, 0.1, …, 1}; α* = best validation clean accuracy with
    validation adversarial accuracy ≥ θ_AT's − 0.1 points.
  * Report (test split): clean accuracy; adversarial accuracy = PGD-10
    (step 2/255) worst case over 3 random restarts; OOD accuracy = mean over the
    15 CIFAR-10-C corruptions × 5 severities (our generator, 32×32 constants).
"""

import ml_collections

from rwsjax.configs import add_autoattack

PRESETS = ("paper", "cpu", "cpu_pgd10", "smoke", "tinyimagenet", "tinyimagenet_cpu")


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for rift; valid: {PRESETS} "
                         "(e.g. --config=rift:cpu)")
    c = ml_collections.ConfigDict()
    c.workflow = "rift"
    c.preset = preset
    c.seed = 0
    # rwsjax | official: the value of every field below left at None where rwsjax's protocol and the official
    # code's differ (rwsjax.protocols; docs/protocols.md); a field set explicitly wins either way.
    c.protocol = "rwsjax"

    c.data = ml_collections.ConfigDict()
    c.data.name = "cifar10"
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: $TFDS_DATA_DIR or TFDS default
    # A dataset missing from the data dir is prepared there first: from manual_dir (the downloaded archive,
    # e.g. cifar-10-python.tar.gz) if given, else downloaded (download=False: stop with the URL instead).
    c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.download = True
    c.data.val_size = 1000          # carved from train (stratified, seeded): every selection uses it
    c.data.train_size = ml_collections.FieldReference(None, field_type=int)  # None: the rest of train
    c.data.test_size = ml_collections.FieldReference(None, field_type=int)   # None: the full test split

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet18"        # resnet18 | resnet34 | preact_resnet18 | wrn34_10
    c.model.width_multiplier = 1.0   # 0.25 = ResNet-18 at width 16
    # Normalization inside the model, (x − mean) / std on [0, 1] pixels; None: the dataset's constants.
    # An imported model that takes raw [0, 1] pixels: --config.model.mean=0,0,0 --config.model.std=1,1,1.
    c.model.mean = ml_collections.FieldReference(None, field_type=tuple)
    c.model.std = ml_collections.FieldReference(None, field_type=tuple)

    # θ_AT given instead of trained: a PyTorch state_dict (.pt/.pth/.safetensors, e.g. a Bag-of-Tricks model of
    # a supported architecture), an rwsjax (Orbax) variables directory, or robustbench:NAME (the RobustBench
    # model NAME from model_dir/<data.name>/Linf/NAME.pt; architecture and normalization set from its name,
    # rwsjax.models.robustbench). The AT stage then adopts it as θ_AT (no training); the rest runs as usual.
    c.init_checkpoint = ""
    c.model_dir = "models"           # RobustBench's model directory (its load_model default, ./models)

    # Training attack (Madry PGD-AT).
    c.attack = ml_collections.ConfigDict()
    c.attack.norm = "linf"
    c.attack.eps = 8 / 255
    c.attack.step_size = 2 / 255
    c.attack.steps = 10
    c.attack.random_start = True
    # None: unrolled PGD loop on CPU (XLA:CPU: 5–8× faster than lax.fori_loop), rolled on GPU/TPU (same speed,
    # 3× faster compiles); True/False forces one.
    c.attack.unroll = ml_collections.FieldReference(None, field_type=bool)

    c.at = ml_collections.ConfigDict()
    c.at.regime = "pgd_at"           # pgd_at | fgsm_rs | trades | mart | score (RiFT Table 2; rwsjax.train.regimes)
    c.at.beta = ml_collections.FieldReference(None, field_type=float)  # trade-off β; None: paper's (6, 6, 4)
    c.at.awp = False                 # adversarial weight perturbation (Wu et al. 2020) on top of the regime
    c.at.awp_gamma = ml_collections.FieldReference(None, field_type=float)  # None: 1e-2 (AT/MART), 5e-3 (TRADES/SCORE)
    c.at.awp_warmup = ml_collections.FieldReference(None, field_type=int)   # epochs without AWP; None: 0 / 10
    c.at.epochs = 110
    c.at.batch_size = 128
    c.at.learning_rate = 0.1
    c.at.momentum = 0.9
    c.at.weight_decay = 5e-4
    c.at.decay_epochs = (100, 105)
    c.at.decay_factor = 0.1
    # piecewise (×decay_factor at decay_epochs) | cyclic (0 → learning_rate → 0, per step); None: the regime's
    # (cyclic for fgsm_rs, piecewise for the others).
    c.at.lr_schedule = ml_collections.FieldReference(None, field_type=str)
    # BN while crafting training attacks: batch (batch stats, running stats untouched) | eval (running stats;
    # official TRADES/MART) | train (batch stats, every attack pass updates the running stats; Bag of Tricks).
    c.at.attack_bn = "batch"
    c.at.clip_start = True           # TRADES/MART: Gaussian start clipped to [0, 1] (False: their official code)
    c.at.extra_clean_pass = False    # TRADES: a third train-mode pass on x as the KL target (official code)
    c.at.val_robust_size = 1000      # validation examples attacked each epoch to pick the best epoch

    # Evaluation attack: PGD-10, worst case of 3 restarts, BN in eval mode.
    c.eval = ml_collections.ConfigDict()
    c.eval.norm = "linf"
    c.eval.eps = 8 / 255
    c.eval.step_size = 2 / 255
    c.eval.steps = 10
    c.eval.random_start = True
    c.eval.unroll = ml_collections.FieldReference(None, field_type=bool)
    c.eval.restarts = 3
    c.eval.batch_size = 256
    add_autoattack(c.eval)  # eval.autoattack=none|standard|plus|rand|lite|custom, next to PGD (rwsjax/configs)

    c.mrc = ml_collections.ConfigDict()
    c.mrc.eps = 0.1
    c.mrc.learning_rate = 1.0
    c.mrc.epochs = 10
    # None below: by protocol (rwsjax | official): examples from train | test, crafting step 2/255 | 2/225,
    # batch 128 | 512, the last smaller batch dropped | an ascent step, projection per step | epoch, MRC ≥ 0 | not.
    c.mrc.split = ml_collections.FieldReference(None, field_type=str)
    c.mrc.attack_step_size = ml_collections.FieldReference(None, field_type=float)
    c.mrc.batch_size = ml_collections.FieldReference(None, field_type=int)
    c.mrc.drop_remainder = ml_collections.FieldReference(None, field_type=bool)
    c.mrc.project_every = ml_collections.FieldReference(None, field_type=str)
    c.mrc.floor = ml_collections.FieldReference(None, field_type=bool)
    c.mrc.num_examples = ml_collections.FieldReference(None, field_type=int)  # None: the whole split
    c.mrc.cache = True               # start each ascent step from the module's cached inputs (exact; ~1.3× on CPU)
    c.mrc.cache_gib = 8.0            # per-module cache budget; a larger one runs from the images
    c.mrc.threads = 2                # modules in flight per device (overlaps compiles and small kernels)

    c.ft = ml_collections.ConfigDict()
    c.ft.modules = "least_critical"  # least_critical | top_k | most_critical | last | all
    c.ft.top_k = 1
    c.ft.epochs = 10
    c.ft.batch_size = 128
    c.ft.learning_rate = 1e-3
    c.ft.momentum = 0.9
    c.ft.weight_decay = 5e-4
    c.ft.decay_epochs = (5,)
    c.ft.decay_factor = 0.1
    c.ft.bn_mode = "train"           # train (official) | frozen

    c.interp = ml_collections.ConfigDict()
    c.interp.alphas = tuple(round(0.1 * i, 1) for i in range(11))
    c.interp.tolerance = 0.1         # percentage points of validation adversarial accuracy
    c.interp.restarts = 1            # PGD restarts for the validation sweep

    # OOD: accuracy on CIFAR-10-C generated from the run's test images (or a real TFDS cifar10_corrupted).
    c.ood = ml_collections.ConfigDict()
    c.ood.enabled = True
    c.ood.source = "generate"        # generate (our 32×32 CIFAR-C generator) | tfds (a prepared cifar10_corrupted)
    c.ood.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: WORKDIR/corrupted_tfds
    c.ood.corruptions = "all"        # all (19) | benchmark (15) | rift (official RiFT code's 18) | a,b,c
    c.ood.severities = (1, 2, 3, 4, 5)
    c.ood.summary = "mean_15"        # the OOD column: mean_15 (15 benchmark × 5) | mean_rift18 | mean_19

    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = True         # WORKDIR/tensorboard: losses, accuracies (%), learning rate, the config
    c.log.wandb = False              # also Weights & Biases (pip install wandb)
    c.log.wandb_project = "rwsjax"

    # Stages at, mrc, ft, interp, ood, report are skipped when done in the workdir; --config.redo=mrc recomputes
    # MRC and everything after it (comma-separate several).
    c.redo = ""

    if preset == "cpu":
        # θ_AT by PGD-AT with 3 steps of ε/2 from a random start and the cyclic learning rate of fast adversarial
        # training (Wong et al. 2020: 0 → 0.2 → 0; FGSM-RS, `at.regime=fgsm_rs`, overfits catastrophically at
        # this scale: validation PGD-10 accuracy 12.7% → 2.2% from epoch 1 to 3) — about 2.5× the images per
        # second of PGD-10 AT — on 30,000 train images, ResNet-18 at width 16; 2,000 test and 1,000 validation
        # images.  The whole pipeline in < 45 min on 2 cores.
        c.model.width_multiplier = 0.25
        c.data.train_size = 30000
        c.data.val_size = 1000
        c.data.test_size = 2000
        c.attack.steps = 3
        c.attack.step_size = 4 / 255
        c.at.lr_schedule = "cyclic"
        c.at.learning_rate = 0.2
        c.at.epochs = 4
        c.at.val_robust_size = 1000
        c.mrc.num_examples = 512
        c.mrc.epochs = 5
        c.ft.epochs = 2
        c.ft.decay_epochs = (1,)
        c.ood.corruptions = "benchmark"  # the 15 of the OOD mean, × 5 severities
    elif preset == "cpu_pgd10":
        # The paper's PGD-10 AT recipe cut to 6 epochs on 8,000 images (500 val / 1,000 test), ResNet-18 at
        # width 16, ~30 min here: the setting of the regime comparison in docs/results.md (RiFT Table 2).
        c.model.width_multiplier = 0.25
        c.data.train_size = 8000
        c.data.val_size = 500
        c.data.test_size = 1000
        c.at.epochs = 6
        c.at.decay_epochs = (4, 5)
        c.at.val_robust_size = 500
        c.mrc.num_examples = 512
        c.mrc.epochs = 5
        c.ft.epochs = 4
        c.ft.decay_epochs = (2,)
    elif preset in ("tinyimagenet", "tinyimagenet_cpu"):
        # Tiny-ImageNet (64×64, 200 classes; `python -m rwsjax.data.prepare tiny_imagenet --manual_dir=ZIP`),
        # test = the official validation split; OOD = Tiny-ImageNet-C (64×64 constants) from the test images.
        c.data.name = "tiny_imagenet"
        c.data.val_size = 2000       # 10 per class
        if preset == "tinyimagenet_cpu":
            # The real subset in ../shared (50 train + 10 val images per class): ResNet-18 at width 16,
            # 3 epochs of PGD-AT on 4,000 images — a pipeline check (accuracies near chance), ~35 min here.
            c.model.width_multiplier = 0.25
            c.data.val_size = 400
            c.data.train_size = 4000
            c.data.test_size = 1000
            c.at.epochs = 3
            c.at.decay_epochs = (2,)
            c.at.val_robust_size = 400
            c.mrc.num_examples = 256
            c.mrc.epochs = 2
            c.ft.epochs = 2
            c.ft.decay_epochs = (1,)
            c.interp.alphas = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
            c.ood.corruptions = "benchmark"  # the 15 of the OOD mean, × 5 severities
    elif preset == "smoke":
        c.model.width_multiplier = 0.0625
        c.data.train_size = 256
        c.data.val_size = 100
        c.data.test_size = 100
        c.at.epochs = 2
        c.at.batch_size = 64
        c.at.decay_epochs = (1,)
        c.at.val_robust_size = 100
        c.attack.steps = 2
        c.eval.steps = 2
        c.eval.restarts = 2
        c.eval.batch_size = 100
        c.mrc.num_examples = 64
        c.mrc.batch_size = 32
        c.mrc.cache = False          # at this size compiling the cached programs costs more than it saves
        c.mrc.epochs = 2
        c.ft.epochs = 2
        c.ft.batch_size = 64
        c.ft.decay_epochs = (1,)
        c.interp.alphas = (0.0, 0.5, 1.0)
        c.ood.corruptions = "gaussian_noise,glass_blur,fog,jpeg_compression"
    return c
