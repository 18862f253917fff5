"""Fold-batched training: the folds of a LOSO run as ONE LightningModule with stacked weights.

F copies of a model (one per fold, each initialised with its fold's seed exactly as the sequential
job initialises it) become one set of stacked tensors, parameter ``p`` of shape ``(F, *p.shape)``.
A step evaluates every fold's own loss on its own batch with ``torch.func.vmap`` over
``torch.func.functional_call`` and returns the SUM over folds: fold f's loss depends on fold f's
slice only, so the gradient of the sum in slice f is exactly fold f's gradient.

Why vmap, not hand-written grouped layers: vmap's batching rules ARE the horizontal fusion of
HFTA (MLSys'21) without touching a model: a convolution over F stacked weights runs as one grouped
convolution, a linear layer as one batched matmul, a normalisation as one kernel over F groups,
for every model whose layers have batching rules (STSTNet, MEDN; anything with data-dependent
shapes or Python control flow on values is refused in one line when the group starts).
That pays where kernels are tiny and launches dominate (GPUs). On a CPU the same kernels are
compute-bound and oneDNN's grouped-convolution backward is slower than F plain ones (measured:
STSTNet, 8 folds, 1.45x slower), so there (``vectorize=False``, the default on CPU) a step runs
the folds' forward/backward one after another on views of the stacked tensors: the kernels of
sequential training, without its per-fold Trainer, data loading and optimiser overheads.

- BatchNorm: running statistics are stacked buffers passed to vmap with the parameters, so each
  fold's batch statistics update its own slice in place (vmap allows in-place updates of a
  batched tensor by a batched value); a fold's BN only ever sees that fold's training batches.
- Dropout: ``randomness='different'``, an independent mask per fold.
- Optimiser: the model's own ``configure_optimizers`` is called and its parameter groups are
  rebound to the stacked tensors. Only optimisers whose update is elementwise are accepted
  (SGD, Adam, AdamW, RMSprop, Adagrad, Adamax, NAdam, RAdam: per-element state, so one stacked
  optimiser is F independent ones exactly); LR schedules advance per epoch/step, the same for
  every fold; a schedule on a monitored metric and gradient-norm clipping (norms across folds)
  are refused.
- Losses: the model's ``loss_terms``/``total_loss`` (WeightedLossMixin), evaluated inside vmap;
  where a loss cannot be batched (e.g. boolean-mask indexing), the forward pass stays batched and
  the loss runs per fold on its slice of the outputs (same value, F small kernels more).
- Prediction: fold f predicts its held-out subject with its own (last) weights through the
  model's ``predict_step``, in eval mode, batch by batch as its predict loader would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from datamodules.errors import MERError

from .base import Batch, MERClassifier, WeightedLossMixin

ELEMENTWISE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
                          torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)
TRAINING_HOOKS = ("training_step", "backward", "optimizer_step", "optimizer_zero_grad", "lr_scheduler_step",
                  "configure_gradient_clipping", "on_train_start", "on_train_end", "on_train_epoch_start",
                  "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end", "on_before_backward",
                  "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad", "on_fit_start", "on_fit_end",
                  "on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
SIZE_KEY = "_samples"  # epoch_sums key of the summed batch sizes
GRADIENT_NORM_REFUSAL = ("--fold-batch: gradient-norm clipping would take the norm across folds; use "
                         "--trainer.gradient_clip_algorithm value or --fold-batch off")


def check_fold_batchable(model_class: type) -> None:
    """One-line MERError when the model's training cannot be stacked over folds exactly."""
    name = model_class.__name__
    if not issubclass(model_class, WeightedLossMixin) or not issubclass(model_class, MERClassifier):
        raise MERError(f"{name} trains with its own training step (not a weighted sum of loss terms); "
                       "it cannot be fold-batched: run it with --fold-batch off")
    shared = {*WeightedLossMixin.__mro__, *MERClassifier.__mro__}
    custom = [hook for hook in TRAINING_HOOKS
              if next(c for c in model_class.__mro__ if hook in c.__dict__) not in shared]
    if custom:
        raise MERError(f"{name} overrides training hook(s) {', '.join(custom)} that fold-batched training does not "
                       "run per fold; run it with --fold-batch off")


class _Call(nn.Module):
    """`model.<method>(batch)` as a module call, so that functional_call can swap the model's tensors."""

    def __init__(self, model: MERClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, method: str, batch: Batch) -> Any:
        if method == "loss":
            terms = self.model.loss_terms(batch, self.model(batch))
            return self.model.total_loss(terms), terms
        if method == "forward":
            return self.model(batch)
        return self.model.predict_step(batch, 0)


def _stacked(per_fold: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, dict[str, Tensor]]:
    """[(loss, terms)] of each fold -> (losses (F,), terms by name (F,))."""
    terms = [t for _, t in per_fold]
    return torch.stack([loss for loss, _ in per_fold]), {name: torch.stack([t[name] for t in terms]) for name in terms[0]}


def _escape(name: str) -> str:
    return name.replace(".", "__")


def fold_state_from_group(group_state: dict[str, Tensor], names: list[str], position: int) -> dict[str, Tensor]:
    """The state dict (by the model's own `names`) of the fold at `position` in a saved FoldBatch's
    state dict (parameter or buffer ``a.b`` is stored as ``stacked.a__b`` of shape (folds, ...))."""
    return {name: group_state[f"stacked.{_escape(name)}"][position] for name in names}


class FoldBatch(L.LightningModule):
    """F folds of one model trained at once (see the module docstring).

    Args:
        models: one freshly initialised model per fold, all of one class and shape.
        batches: gives the step's batch of every fold (values (F, B, ...)) for a step index,
            e.g. :class:`datamodules.fold_batch_data.DeviceResidentFolds`.
        compile: ``torch.compile`` the batched loss (optional; off by default).
        vectorize: vmap over folds (True) or loop over them inside each step (False); None: vmap
            on accelerators, loop on CPU.
    """

    def __init__(self, models: list[MERClassifier], batches: Any, compile: bool = False,
                 vectorize: bool | None = None) -> None:
        super().__init__()
        check_fold_batchable(type(models[0]))
        if len({type(m) for m in models}) != 1:
            raise MERError("a fold group must hold one model class")
        self.n_folds = len(models)
        self.batches = batches
        self.stacked = nn.Module()
        self._names = {n: _escape(n) for n, _ in models[0].named_parameters()}
        self._buffer_names = {n: _escape(n) for n, _ in models[0].named_buffers()}
        for name, escaped in self._names.items():
            values = [m.get_parameter(name) for m in models]
            if len({v.shape for v in values}) != 1:
                raise MERError(f"parameter {name} differs in shape between folds ({sorted({tuple(v.shape) for v in values})}); "
                               "these folds cannot be batched: run them with --fold-batch off")
            self.stacked.register_parameter(escaped, nn.Parameter(torch.stack([v.detach() for v in values]),
                                                                  requires_grad=values[0].requires_grad))
        for name, escaped in self._buffer_names.items():
            self.stacked.register_buffer(escaped, torch.stack([m.get_buffer(name).detach() for m in models]))
        self._call = [_Call(models[0])]  # a list: the template's own tensors are no part of this module
        self.vectorize = vectorize
        self._loss_batched: bool | None = None  # decided at the first step
        self._batched_loss = torch.compile(self._vmapped("loss")) if compile else self._vmapped("loss")
        self.epoch_sums: dict[str, Tensor] = {}  # per-fold sums (F,) of batch size x loss, and of batch sizes

    # -- stacked tensors ---------------------------------------------------------------------------------
    @property
    def template(self) -> MERClassifier:
        return self._call[0].model

    def tensors(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(parameters, buffers) by the model's own names (prefixed for _Call), stacked (F, ...)."""
        params = {f"model.{n}": self.stacked.get_parameter(e) for n, e in self._names.items()}
        buffers = {f"model.{n}": self.stacked.get_buffer(e) for n, e in self._buffer_names.items()}
        return params, buffers

    def fold_state(self, i: int) -> dict[str, Tensor]:
        """Fold i's tensors by the model's names (its state_dict values)."""
        params, buffers = self.tensors()
        return {name.removeprefix("model."): value[i] for name, value in {**params, **buffers}.items()}

    def _apply(self, fn: Any, recurse: bool = True) -> FoldBatch:
        self._call[0]._apply(fn)  # the template (its tensors are swapped out in every call) follows the device
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> FoldBatch:
        self._call[0].train(mode)
        return super().train(mode)

    # -- the batched step ---------------------------------------------------------------------------------
    def _vmapped(self, method: str) -> Any:
        def one_fold(params: dict[str, Tensor], buffers: dict[str, Tensor], batch: Batch) -> Any:
            return functional_call(self._call[0], (params, buffers), (method, batch))

        return vmap(one_fold, randomness="different")

    @contextlib.contextmanager
    def _attention_kernel(self) -> Iterator[None]:
        """On CPU, attention's fused kernel has no vmap rule (vmap would loop over folds): use the math one."""
        if self.device.type != "cpu":
            yield
            return
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            yield

    def fold_losses(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Every fold's own total loss (F,) and loss terms on its own batch (values (F, B, ...))."""
        params, buffers = self.tensors()
        if not (self.device.type != "cpu" if self.vectorize is None else self.vectorize):
            return self._fold_loop(params, buffers, batch)
        with self._attention_kernel():
            if self._loss_batched is None:
                self._loss_batched = self._probe(params, buffers, batch)
            if self._loss_batched:
                return self._batched_loss(params, buffers, batch)
        outputs = self.batched_forward(batch)
        per_fold = [self.template.loss_terms({k: v[i] for k, v in batch.items()}, {k: v[i] for k, v in outputs.items()})
                    for i in range(self.n_folds)]
        return _stacked([(self.template.total_loss(terms), terms) for terms in per_fold])

    def batched_forward(self, batch: Batch) -> dict[str, Tensor]:
        """Every fold's model outputs on its own batch, vmapped (values (F, B, ...))."""
        params, buffers = self.tensors()
        with self._attention_kernel():
            return self._vmapped("forward")(params, buffers, batch)

    def _fold_loop(self, params: dict[str, Tensor], buffers: dict[str, Tensor], batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The folds one after another, each on views of its slice (gradients and BN updates land in it)."""
        return _stacked([functional_call(self._call[0], ({n: v[i] for n, v in params.items()}, {n: v[i] for n, v in buffers.items()}),
                                         ("loss", {k: v[i] for k, v in batch.items()}))
                         for i in range(self.n_folds)])

    def _probe(self, params: dict[str, Tensor], buffers: dict[str, Tensor], batch: Batch) -> bool:
        """Whether the loss can be computed inside vmap (tried on copies of the buffers and of the random
        state, without gradients, so a resumed run stays exact);
        a one-line MERError when not even the forward pass can be batched."""
        copies = {name: value.clone() for name, value in buffers.items()}
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):  # the probe's dropout draws leave no trace
            try:
                self._vmapped("loss")(params, copies, batch)
                return True
            except RuntimeError:
                pass
            try:
                self._vmapped("forward")(params, copies, batch)
            except RuntimeError as err:
                raise MERError(f"{type(self.template).__name__} has a layer torch.func.vmap cannot batch "
                               f"({str(err).splitlines()[0]}); run it with --fold-batch off") from None
        return False

    def training_step(self, step: Tensor, batch_idx: int) -> Tensor:
        batch = self.batches.train_batch(batch_idx)
        self.template.require_inputs(batch)
        losses, terms = self.fold_losses(batch)
        size = batch["label"].shape[1]  # every fold's batch has this many samples at this step
        step_values = {"loss": losses, **terms, SIZE_KEY: torch.ones_like(losses)}
        step_sums = {name: size * value.detach() for name, value in step_values.items()}
        self.epoch_sums = step_sums if batch_idx == 0 else {n: self.epoch_sums[n] + v for n, v in step_sums.items()}
        return losses.sum()

    def fold_epoch_means(self) -> list[dict[str, float]]:
        """Each fold's epoch means ``train/loss`` and ``train/<term>`` of the epoch so far, weighted by batch
        size as the sequential path's ``on_epoch`` logging weighs them (one host sync)."""
        if not self.epoch_sums:
            return []
        sizes = self.epoch_sums[SIZE_KEY]
        means = {f"train/{name}": (total / sizes).tolist() for name, total in self.epoch_sums.items() if name != SIZE_KEY}
        return [{name: values[i] for name, values in means.items()} for i in range(self.n_folds)]

    def on_train_epoch_end(self) -> None:
        """Per-fold epoch means in the group's own log (``train/loss/fold_007``; the runner sends each fold's
        to that fold's W&B run)."""
        if self.logger is not None:
            self.log_dict({f"{name}/fold_{k:03d}": value for k, means in zip(self.batches.folds, self.fold_epoch_means())
                           for name, value in means.items()})

    # -- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """The model's own optimiser(s) and schedule, its parameter groups rebound to the stacked tensors."""
        config = self.template.configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise MERError(f"{type(self.template).__name__}.configure_optimizers returns {type(config).__name__}; "
                           "fold-batched training takes one optimiser (optionally with one lr_scheduler)")
        if type(optimizer) not in ELEMENTWISE_OPTIMIZERS:
            raise MERError(f"{type(optimizer).__name__} is not an elementwise optimiser: one stacked instance would "
                           "couple the folds; run this model with --fold-batch off")
        scheduler = (config.get("lr_scheduler") if isinstance(config, dict) else None) or {}
        if isinstance(scheduler, dict) and "monitor" in scheduler or isinstance(
                scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or isinstance(
                scheduler.get("scheduler") if isinstance(scheduler, dict) else None, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise MERError("a learning-rate schedule on a monitored metric differs per fold; run with --fold-batch off")
        names = {id(p): n for n, p in self.template.named_parameters()}
        for group in optimizer.param_groups:
            group["params"] = [self.stacked.get_parameter(self._names[names[id(p)]]) for p in group["params"]]
        return config

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        if gradient_clip_val and gradient_clip_algorithm != "value":
            raise MERError(GRADIENT_NORM_REFUSAL)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- prediction --------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_fold(self, i: int, batches: Any) -> tuple[Tensor, Tensor]:
        """Fold i's last weights on its held-out batches: (table rows, class probabilities), in eval mode."""
        was_training = self.training
        self.eval()
        params, buffers = self.tensors()
        fold = ({n: v[i] for n, v in params.items()}, {n: v[i] for n, v in buffers.items()})
        index, probs = [], []
        try:
            for batch in batches:
                self.template.require_inputs(batch)
                out = functional_call(self._call[0], fold, ("predict", batch))
                index.append(out["index"])
                probs.append(out["probs"])
        finally:
            self.train(was_training)
        return torch.cat(index), torch.cat(probs)
