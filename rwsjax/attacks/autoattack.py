"""AutoAttack (Croce & Hein, ICML 2020): the reference's versions and evaluation loop over a whole dataset,
on rwsjax models, sharded over every device (fra31/auto-attack ``autoattack.py`` ``run_standard_evaluation``).

    aa = AutoAttack(model, eps=8 / 255, version="standard")
    out = aa.run(variables, images, labels)        # images float32 [N, H, W, C] in [0, 1] (or uint8), labels [N]
    out["robust_accuracy"], out["accuracy_after"]  # % after the last attack; % after each attack, in order
    out["x_adv"]                                   # float32 [N, H, W, C]: the adversarial examples (x where robust)

Versions (:data:`VERSIONS`, the reference's ``_set_version``):

- ``standard``: APGD-CE (1 restart), APGD-T (9 target classes, 1 restart each), FAB-T (9 targets), Square
  (5,000 queries) — RobustBench's protocol;
- ``plus``: APGD-CE and APGD-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T;
- ``rand``: APGD-CE and APGD-DLR with EOT over 20 gradients (randomized defenses);
- ``custom``: any list of :data:`ATTACKS` (``attacks=[...]``), standard settings.

Every attack runs only on the examples still robust (correct on x and not broken by an earlier attack,
restart or target), in fixed-size batches of those examples, so each attack compiles once (APGD-CE, -DLR and
-T share one step program: the loss is a per-example code, and the step's first call evaluates the start;
target classes come from the clean logits of the first pass, as the reference's sort of ``model(x)``).  Each
APGD / FAB / Square iteration is one compiled call (the loop runs on the host: on XLA:CPU a rolled ``lax.scan`` of
convolutions is ~3× slower than the same iterations called one by one, and compiles ~10× longer).  An
example's random starts come from ``(seed, round, example index)``, so results do not depend on the batch
size, the device count or an interruption: with ``state_path`` the evaluation writes its progress after
every batch (at most every ``save_every`` seconds, atomically) and a rerun continues where it stopped,
giving the same result as an uninterrupted run.

The reference's sanity checks run on the first batch and are returned as ``warnings`` (and printed):
softmax outputs, a randomized model (logits differ between two calls), zero gradients at APGD-DLR/APGD-T
starts, Square lowering the accuracy below the gradient attacks.  DLR losses need ≥ 3 classes (untargeted)
or ≥ 4 (targeted) and at most K − 1 targets: a :class:`ValueError` says so (the reference crashes there).

Differences from the reference, all from randomness: its starts, square positions and signs are drawn per
batch from PyTorch's global generator; here per example (same distribution).  The loss and step-size logic
is the reference's (``tests/test_apgd.py``, ``tests/test_autoattack.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings as _warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.atomic import atomic_path
from rwsjax.attacks import apgd as apgd_lib
from rwsjax.attacks import fab as fab_lib
from rwsjax.attacks import square as square_lib
from rwsjax.attacks.pgd import NORMS
from rwsjax.train import dispatch, sharding

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Per-attack settings (the reference's ``AutoAttack.__init__`` + ``_set_version``)."""
    n_iter: int = 100            # APGD and FAB iterations
    apgd_restarts: int = 1       # APGD-CE / APGD-DLR restarts
    apgd_targets: int = 9        # APGD-T target classes (1 restart each)
    fab_restarts: int = 1        # untargeted FAB restarts
    fab_targets: int = 9         # FAB-T target classes (1 restart each)
    square_queries: int = 5000
    eot_iter: int = 1            # gradients averaged per APGD iterate


def version_settings(version: str) -> tuple[tuple[str, ...], Settings]:
    """The attack list and settings of an AutoAttack version (``custom``: no list, standard settings).

    Raises:
      ValueError: an unknown version.
    """
    if version == "standard" or version == "custom":
        return VERSIONS.get(version, ()), Settings()
    if version == "plus":
        return VERSIONS["plus"], Settings(apgd_restarts=5, fab_restarts=5)
    if version == "rand":
        return VERSIONS["rand"], Settings(eot_iter=20)
    raise ValueError(f"unknown AutoAttack version {version!r}; valid: standard, plus, rand, custom")


def _rounds(attack: str, s: Settings) -> list[tuple[int, int]]:
    """``(target rank, restart)`` pairs of one attack, in the reference's order (rank 0: untargeted)."""
    if attack in ("apgd-ce", "apgd-dlr"):
        return [(0, r) for r in range(s.apgd_restarts)]
    if attack == "apgd-t":
        return [(rank, 0) for rank in range(2, s.apgd_targets + 2)]
    if attack == "fab":
        return [(0, r) for r in range(s.fab_restarts)]
    if attack == "fab-t":
        return [(rank, 0) for rank in range(2, s.fab_targets + 2)]
    return [(0, 0)]


#: The APGD attacks' loss codes (indices into :data:`rwsjax.attacks.apgd.LOSSES`).
_LOSS_CODE = {"apgd-ce": 0, "apgd-dlr": 1, "apgd-t": 2}


def _keys(ids):
    """One PRNG key per row of ``ids`` int32 ``[B, 6]`` from its first three columns = (seed, round, example
    index); the others are the target class, the restart and the APGD loss code."""
    return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(r[0]), r[1]), r[2]))(ids)


def _rank_targets(logits: np.ndarray, rank: int) -> np.ndarray:
    """Per row the class with the ``rank``-th highest clean logit (reference ``sort(dim=1)[1][:, -rank]``)."""
    return np.argsort(logits, axis=-1, kind="stable")[:, logits.shape[-1] - rank].astype(np.int32)


class AutoAttack:
    """AutoAttack on a Flax classifier with BatchNorm in evaluation mode.

    Args:
      model: a Flax module, ``model.apply(variables, x [B, H, W, C] in [0, 1], train=False) -> logits [B, K]``.
      eps: radius on the [0, 1] pixel scale (RobustBench ℓ∞: 8/255; ℓ2: 0.5); ``norm`` ``"linf"`` or ``"l2"``.
      version: ``standard`` | ``plus`` | ``rand`` | ``custom`` (then ``attacks`` is required).
      attacks: for ``custom``, a list of :data:`ATTACKS` in the order to run.
      settings: override the version's :class:`Settings` (e.g. fewer iterations in a smoke test).
      mesh: device mesh (default every device); batches are sharded over it, weights replicated.

    Raises:
      ValueError: unknown version/attack/norm, ``attacks`` with a non-custom version, or none for custom.
    """

    def __init__(self, model, *, eps: float, norm: str = "linf", version: str = "standard",
                 attacks: list[str] | tuple[str, ...] | None = None, settings: Settings | None = None, mesh=None):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
        default, base = version_settings(version)
        if version != "custom" and attacks is not None:
            raise ValueError(f"attacks= is only for version='custom' (version {version!r} has its own list)")
        attacks = tuple(attacks) if attacks is not None else default
        if not attacks:
            raise ValueError(f"version='custom' needs attacks=[...] from {ATTACKS}")
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown:
            raise ValueError(f"unknown attack(s) {unknown}; valid: {ATTACKS}")
        self.model, self.eps, self.norm, self.version = model, float(eps), norm, version
        self.attacks, self.settings = attacks, settings or base
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        self._build()

    # ---- compiled parts: one set per AutoAttack object (cache the object to share them) -------------------
    def _build(self):
        model, eps, norm, st = self.model, self.eps, self.norm, self.settings
        rep, data = sharding.replicated(self.mesh), sharding.batch_sharded(self.mesh)
        fn = lambda v: (lambda u: model.apply(v, u, train=False))  # noqa: E731
        jit = lambda f, n_in: jax.jit(f, in_shardings=(rep,) + (data,) * (n_in - 1), out_shardings=data)  # noqa: E731
        self._logits = jit(lambda v, x: fn(v)(x), 2)
        # One program set for APGD-CE, -DLR and -T: the loss is a per-example code (ids[:, 5] into LOSSES).
        kw = dict(eps=eps, n_iter=st.n_iter, norm=norm, eot_iter=st.eot_iter)

        def a_init(v, x, y, ids):
            targets, code = ids[:, 3], ids[:, 5]
            x0 = apgd_lib.start(_keys(ids), x, eps=eps, norm=norm)
            return apgd_lib.pending(x, x0, eps=eps, n_iter=st.n_iter), (targets, code)  # step 0 evaluates x0

        def a_step(v, s, x, y, targets):
            return apgd_lib.step(fn(v), s, x, y, loss=targets[1], targets=targets[0], **kw)

        def a_finish(v, s, x, y, mask):
            x_adv, robust = apgd_lib.result(s)
            pred = jnp.argmax(fn(v)(x_adv), -1)
            return x_adv, mask & ~robust & (pred != y), pred, s["zero_grad"] & mask

        self._apgd = (jit(a_init, 4), jit(a_step, 5), jit(a_finish, 5))
        self._fab = {}
        for targeted in (False, True):
            def f_init(v, x, y, ids, targeted=targeted):
                targets = ids[:, 3] if targeted else y
                keys = _keys(ids)
                s0 = fab_lib.init(x, keys, eps=eps, norm=norm, random_start=False)
                s1 = fab_lib.init(x, keys, eps=eps, norm=norm, random_start=True)
                use = (ids[:, 4] > 0).reshape((-1,) + (1,) * (x.ndim - 1))
                s0["x1"] = jnp.where(use, s1["x1"], s0["x1"])
                return s0, targets

            def f_step(v, s, x, y, targets, targeted=targeted):
                return fab_lib.step(fn(v), s, x, y, norm=norm, targets=targets if targeted else None)

            def f_finish(v, s, x, y, mask):
                adv = fab_lib.result(s, x)
                pred = jnp.argmax(fn(v)(adv), -1)
                d = (adv - x).reshape(x.shape[0], -1)
                size = jnp.max(jnp.abs(d), -1) if norm == "linf" else jnp.sqrt(jnp.sum(d * d, -1))
                return adv, mask & (pred != y) & (size <= eps), pred, jnp.zeros_like(mask)

            self._fab[targeted] = (jit(f_init, 4), jit(f_step, 5), jit(f_finish, 5))

        def s_init(v, x, y, ids):
            return square_lib.init(fn(v), x, y, _keys(ids), eps=eps, norm=norm), y

        def s_step(v, s, x, y, targets):
            return square_lib.step(fn(v), s, x, y, eps=eps, n_queries=st.square_queries, norm=norm)

        def s_finish(v, s, x, y, mask):
            adv = square_lib.result(s)
            pred = jnp.argmax(fn(v)(adv), -1)
            return adv, mask & (pred != y), pred, jnp.zeros_like(mask)

        self._square = (jit(s_init, 4), jit(s_step, 5), jit(s_finish, 5))
        self._square_done = jax.jit(lambda s, mask: jnp.all(square_lib.done(s, st.square_queries) | ~mask),
                                    in_shardings=(data, data), out_shardings=rep)

    def _parts(self, attack):
        if attack.startswith("apgd"):
            return self._apgd, self.settings.n_iter + 1, None  # the start's evaluation, then n_iter iterations
        if attack.startswith("fab"):
            return self._fab[attack == "fab-t"], self.settings.n_iter, None
        return self._square, self.settings.square_queries, self._square_done

    def _run_batch(self, attack, variables, x, y, mask, ids):
        (init, step, finish), n_steps, done = self._parts(attack)
        with dispatch.guard():
            state, targets = init(variables, x, y, ids)
            for i in range(n_steps):
                state = step(variables, state, x, y, targets)
                if done is not None and (i + 1) % 50 == 0 and bool(jax.device_get(done(state, mask))):
                    break
            return finish(variables, state, x, y, mask)

    # ---- the evaluation loop ------------------------------------------------------------------------------
    def run(self, variables, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 250, seed: int = 0,
            state_path: str | None = None, save_every: float = 60.0, progress: Callable[[str], None] | None = print,
            ) -> dict[str, Any]:
        """Evaluate ``variables`` on ``images`` (float32 in [0, 1] or uint8 ``[N, H, W, C]``), ``labels`` int ``[N]``.

        Args:
          batch_size: examples per batch (padded to a multiple of the device count).
          seed: the random starts' seed.
          state_path: a ``.npz`` file to keep the progress in and resume from (a state made with other
            settings, data or weights is not reused: a one-line notice says so and the evaluation restarts).
          save_every: seconds between progress writes within an attack (each attack's end is always written).
          progress: called with one line per attack (and notices); ``None`` for silence.

        Returns:
          ``{"clean_accuracy", "robust_accuracy": %, "accuracy_after": {attack: %}, "n", "attacks", "version",
          "eps", "norm", "seconds", "warnings": [str], "clean": bool [N], "robust": bool [N],
          "x_adv": float32 [N, H, W, C] (x where robust), "y_adv": int [N] (the prediction at x_adv)}``.

        Raises:
          ValueError: too few classes for a DLR loss or too many target classes, mismatched lengths.
        """
        say = progress or (lambda _: None)
        t0 = time.time()
        x_all = np.asarray(images)
        x_all = x_all.astype(np.float32) / 255.0 if x_all.dtype == np.uint8 else x_all.astype(np.float32)
        y_all = np.asarray(labels).astype(np.int32)
        if len(x_all) != len(y_all) or len(x_all) == 0:
            raise ValueError(f"AutoAttack needs as many labels as images (> 0), got {len(x_all)} and {len(y_all)}")
        n = len(x_all)
        n_dev = self.mesh.devices.size
        bs = -(-min(batch_size, n) // n_dev) * n_dev
        variables = sharding.replicate(variables, self.mesh)
        fingerprint = self._fingerprint(variables, x_all, y_all, seed)
        st = self._load(state_path, fingerprint, say) if state_path else None
        warn: list[str] = []

        # A last, smaller batch is padded only to the next of bs, bs/2, bs/4, bs/8 (device multiples): as the
        # robust set shrinks, the later attacks run on small batches, compiling at most 4 shapes each.
        buckets = sorted({max(n_dev, -(-bs // 2**k // n_dev) * n_dev) for k in range(4)})

        def batches(rows):
            for start in range(0, len(rows), bs):
                part = rows[start:start + bs]
                size = next(b for b in buckets if b >= len(part))
                pad = np.concatenate([part, np.full(size - len(part), part[0], part.dtype)])
                yield start // bs, part, pad, np.arange(size) < len(part)

        def put(pad, mask, ids):
            return sharding.shard_batch((x_all[pad], y_all[pad], mask, ids), self.mesh)

        if st is None:
            clean_logits = None
            for _, part, pad, mask in batches(np.arange(n)):
                xb, _, _, _ = put(pad, mask, np.zeros((len(pad), 6), np.int32))
                with dispatch.guard():
                    logits = np.asarray(jax.device_get(self._logits(variables, xb)))
                if clean_logits is None:
                    clean_logits = np.zeros((n, logits.shape[-1]), np.float32)
                clean_logits[part] = logits[: len(part)]
            pred = clean_logits.argmax(-1).astype(np.int32)
            clean = pred == y_all
            st = dict(clean=clean, robust=clean.copy(), x_adv=x_all.copy(), y_adv=pred, round=0, batch=0, rows=None,
                      after={}, seconds=0.0, logits=clean_logits)
        else:
            st["x_adv"] = x_all.copy()
            st["x_adv"][st.pop("hit")] = st.pop("x_hit")
        warn += self._checks(variables, x_all[:bs], y_all[:bs], say)
        rounds = [(a, rank, r) for a in self.attacks for rank, r in _rounds(a, self.settings)]
        last_save = time.time()
        say(f"[autoattack] {self.version}: {', '.join(self.attacks)}; clean {100 * st['clean'].mean():.2f}% of {n}")
        for ri in range(st["round"], len(rounds)):
            attack, rank, restart = rounds[ri]
            if st["rows"] is None:
                st["rows"], st["batch"] = np.flatnonzero(st["robust"]), 0
            rows = st["rows"]
            for b, part, pad, mask in batches(rows):
                if b < st["batch"]:
                    continue
                size = len(pad)
                # (seed, round, index) → the random start; the target class (the label when untargeted: targets
                # from the clean logits, as the reference's sort of model(x)); the restart; the APGD loss code
                target = _rank_targets(st["logits"][pad], rank) if rank else y_all[pad]
                ids = np.stack([np.full(size, seed), np.full(size, ri), pad, target, np.full(size, restart),
                                np.full(size, _LOSS_CODE.get(attack, 0))], 1).astype(np.int32)
                out = self._run_batch(attack, variables, *put(pad, mask, ids))
                x_adv, broken, pred, zero = (np.asarray(v) for v in jax.device_get(out))
                hit = part[broken[: len(part)]]
                st["robust"][hit] = False
                st["x_adv"][hit] = x_adv[: len(part)][broken[: len(part)]]
                st["y_adv"][hit] = pred[: len(part)][broken[: len(part)]]
                if zero.any() and b == 0 and not any("zero gradient" in w for w in warn):
                    warn.append(self._warn(f"{int(zero.sum())} example(s) with zero gradient at the {attack} "
                                           "start: gradient-based attacks may be unreliable on them", say))
                st["batch"] = b + 1
                if state_path and time.time() - last_save > save_every:
                    self._save(state_path, fingerprint, st, ri, t0)  # this round, from batch st["batch"]
                    last_save = time.time()
            st["rows"], st["batch"] = None, 0
            if ri + 1 == len(rounds) or rounds[ri + 1][0] != attack:
                st["after"][attack] = 100.0 * st["robust"].mean()
                say(f"[autoattack] after {attack}: {st['after'][attack]:.2f}% ({time.time() - t0 + st['seconds']:.0f} s)")
            if state_path:
                self._save(state_path, fingerprint, st, ri + 1, t0)
                last_save = time.time()
        if "square" in st["after"] and len(st["after"]) > 1:
            others = min(v for k, v in st["after"].items() if k != "square")
            if st["after"]["square"] < others - 0.2:
                warn.append(self._warn(f"Square lowered the robust accuracy by {others - st['after']['square']:.2f} "
                                       "points below the gradient attacks: the evaluation may be unreliable "
                                       "(gradient masking); consider adaptive attacks", say))
        seconds = st["seconds"] + time.time() - t0
        return {"clean_accuracy": float(100.0 * st["clean"].mean()), "robust_accuracy": float(100.0 * st["robust"].mean()),
                "accuracy_after": {k: float(v) for k, v in st["after"].items()}, "n": n, "attacks": list(self.attacks), "version": self.version,
                "eps": self.eps, "norm": self.norm, "seconds": float(seconds), "warnings": warn, "clean": st["clean"],
                "robust": st["robust"], "x_adv": st["x_adv"], "y_adv": st["y_adv"].astype(np.int32)}

    # ---- checks, state -----------------------------------------------------------------------------------
    @staticmethod
    def _warn(msg, say):
        _warnings.warn(msg, stacklevel=3)
        say(f"[autoattack] warning: {msg}")
        return msg

    def _checks(self, variables, x, y, say) -> list[str]:
        bs = -(-len(x) // self.mesh.devices.size) * self.mesh.devices.size
        pad = np.concatenate([x, np.repeat(x[:1], bs - len(x), 0)]) if len(x) < bs else x
        xb = sharding.shard_batch(pad, self.mesh)
        with dispatch.guard():
            a, b = (np.asarray(jax.device_get(self._logits(variables, xb)))[: len(x)] for _ in range(2))
        k, out = a.shape[-1], []
        needs = {"apgd-dlr": 3, "apgd-t": 4}
        for attack, least in needs.items():
            if attack in self.attacks and k < least:
                raise ValueError(f"{attack} uses a DLR loss that needs at least {least} classes, the model has {k}; "
                                 "drop it (version='custom', attacks=[...]) or use APGD-CE")
        for attack, targets in (("apgd-t", self.settings.apgd_targets), ("fab-t", self.settings.fab_targets)):
            if attack in self.attacks and targets > k - 1:
                raise ValueError(f"{attack} with {targets} target classes needs at least {targets + 1} classes, the "
                                 f"model has {k}; set fewer targets (Settings(apgd_targets=..., fab_targets=...))")
        if (a.max() < 1 + 1e-5) and (a.min() > -1e-5) and np.all(np.abs(a.sum(-1) - 1) < 1e-5):
            out.append(self._warn("the model's outputs look like probabilities: AutoAttack needs logits", say))
        if self.version != "rand":
            na = a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-10)
            nb = b / (np.linalg.norm(b, axis=-1, keepdims=True) + 1e-10)
            if np.any((a.argmax(-1) == y) != (b.argmax(-1) == y)) or np.abs(na - nb).max() > 1e-4:
                out.append(self._warn("the model looks randomized (two calls gave different logits): use "
                                      "version='rand'", say))
        return out

    def _fingerprint(self, variables, x_all, y_all, seed) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.version, list(self.attacks), dataclasses.asdict(self.settings), self.eps,
                             self.norm, seed, list(x_all.shape)]).encode())
        h.update(np.ascontiguousarray(x_all).tobytes())
        h.update(y_all.tobytes())
        for leaf in jax.tree_util.tree_leaves(jax.device_get(variables)):
            h.update(np.ascontiguousarray(leaf).tobytes())
        return h.hexdigest()

    def _save(self, path, fingerprint, st, round_index, t0):
        """Write the progress: resume at round ``round_index`` (mid-round: from batch ``st["batch"]``)."""
        hit = np.flatnonzero(st["clean"] & ~st["robust"])
        meta = dict(fingerprint=fingerprint, round=round_index,
                    batch=int(st["batch"]), after=st["after"], seconds=st["seconds"] + time.time() - t0)
        arrays = dict(clean=st["clean"], robust=st["robust"], hit=hit, x_hit=st["x_adv"][hit], logits=st["logits"],
                      y_adv=st["y_adv"], rows=st["rows"] if st["rows"] is not None else np.zeros(0, np.int64),
                      has_rows=np.asarray(st["rows"] is not None), meta=np.asarray(json.dumps(meta)))
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)

    def _load(self, path, fingerprint, say):
        if not os.path.exists(path):
            return None
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            if meta["fingerprint"] != fingerprint:
                say(f"[autoattack] {path} was made with other settings, data or weights: starting afresh")
                return None
            st = dict(clean=f["clean"].copy(), robust=f["robust"].copy(), y_adv=f["y_adv"].copy(),
                      rows=f["rows"].copy() if bool(f["has_rows"]) else None, round=int(meta["round"]),
                      batch=int(meta["batch"]), after=dict(meta["after"]), seconds=float(meta["seconds"]),
                      hit=f["hit"].copy(), x_hit=f["x_hit"].copy(), logits=f["logits"].copy())
        say(f"[autoattack] resuming from {path}: attack round {st['round']}, batch {st['batch']}")
        return st


#: ``eval.autoattack`` values: none, the versions, and ``lite`` (APGD-CE then APGD-T: the two gradient attacks).
CONFIG_VERSIONS = ("none", "lite", "standard", "plus", "rand", "custom")


def make_autoattack(model, mesh, *, eps: float, norm: str = "linf", version: str = "standard",
                    attacks: tuple[str, ...] | None = None, settings: dict | None = None) -> AutoAttack:
    """:class:`AutoAttack` for a config's ``eval`` block (``lite`` = custom APGD-CE + APGD-T); ``settings``
    overrides fields of the version's :class:`Settings` (None values are ignored)."""
    if version == "lite":
        version, attacks = "custom", ("apgd-ce", "apgd-t")
    base = version_settings(version)[1]
    settings = dataclasses.replace(base, **{k: v for k, v in (settings or {}).items() if v is not None})
    return AutoAttack(model, eps=eps, norm=norm, version=version, attacks=attacks, settings=settings, mesh=mesh)


def config_kwargs(eval_cfg) -> dict:
    """:func:`make_autoattack` keyword arguments from a config's ``eval`` block (``eval.autoattack`` not none)."""
    version = eval_cfg.autoattack
    attacks = None
    if version == "custom":
        attacks = tuple(a.strip() for a in str(eval_cfg.autoattack_attacks).split(",") if a.strip())
    targets, restarts = eval_cfg.get("apgd_targets"), eval_cfg.get("apgd_restarts")
    settings = dict(n_iter=eval_cfg.get("apgd_iters"), apgd_targets=targets, fab_targets=targets,
                    apgd_restarts=restarts, fab_restarts=restarts, square_queries=eval_cfg.get("square_queries"))
    return dict(eps=float(eval_cfg.eps), norm=eval_cfg.norm, version=version, attacks=attacks, settings=settings)


__all__ = ["ATTACKS", "AutoAttack", "CONFIG_VERSIONS", "Settings", "VERSIONS", "config_kwargs", "make_autoattack",
           "version_settings"]
